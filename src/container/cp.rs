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
struct Landing {
    root: PathBuf,
    top: Option<String>,
}

fn other(msg: impl Into<String>) -> ContainerError {
    ContainerError::Other(msg.into())
}

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
fn check_contents(path: &Path, contents: bool, kind: SrcKind) -> std::result::Result<(), String> {
    if contents && kind != SrcKind::Dir {
        return Err(format!("{}: not a directory", path.display()));
    }
    Ok(())
}

/// Unpacks the tar stream `reader` into `root` (a whiteout in it is refused: it would delete
/// files), naming `dest` in errors. Returns the bytes of file contents written.
fn unpack(reader: io::PipeReader, root: &Path, dest: &Path) -> std::result::Result<u64, String> {
    let stats = archive::extract(
        io::BufReader::new(reader),
        root,
        &ExtractOptions {
            whiteouts: WhiteoutMode::Refuse,
            ..Default::default()
        },
    )
    .map_err(|e| format!("{}: {e}", dest.display()))?;
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
) -> std::result::Result<Landing, String> {
    let shown = dest.display();
    match (src_kind, exists) {
        (SrcKind::Stream, Some(true)) => Ok(Landing {
            root: dest.to_path_buf(),
            top: None,
        }),
        (SrcKind::Stream, _) => Err(format!("{shown}: the destination must be a directory")),
        (_, Some(true)) => Ok(Landing {
            root: dest.to_path_buf(),
            top: if src_contents {
                None
            } else {
                Some(src_name.to_string())
            },
        }),
        (SrcKind::Dir, Some(false)) => Err(format!("{shown}: cannot copy a directory to a file")),
        (SrcKind::File, Some(false)) if dest_must_dir => Err(format!("{shown}: not a directory")),
        (SrcKind::File, None) if dest_must_dir => {
            Err(format!("{shown}: the destination directory does not exist"))
        }
        (_, _) => {
            let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
                return Err(format!("{shown}: not a valid destination"));
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
    let err = |e: io::Error| other(format!("{}: {e}", c.config.name));
    if c.is_running() {
        let pidfd = c
            .pidfd()
            .ok_or_else(|| other(format!("{}: its process is gone", c.config.name)))?;
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
        .ok_or_else(|| {
            other(format!(
                "{}: the container stopped during the copy",
                c.config.name
            ))
        });
    }
    let store = crate::store::Store::open(cs.dir().parent().unwrap_or(cs.dir()))
        .map_err(|e| other(e.to_string()))?;
    let lowers = crate::rootfs::layers::lower_dirs(&store, &c.layers()?)
        .map_err(|e| other(e.to_string()))?;
    let scratch = crate::common::atomic::create_temp_dir(&c.dir, "cp", 0o700)
        .map_err(|e| other(e.to_string()))?;
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
    let (reader, writer) = io::pipe().map_err(|e| other(e.to_string()))?;
    let (kind_tx, kind_rx) = mpsc::channel::<std::result::Result<SrcKind, String>>();
    let (top_tx, top_rx) = mpsc::channel::<Option<String>>();
    std::thread::scope(|s| {
        let inside = s.spawn(|| {
            in_container(cs, c, move || -> std::result::Result<(), String> {
                let Some(kind) = src_kind_of(&src_path, opts.follow) else {
                    let _ = kind_tx.send(Err(format!(
                        "could not find {} in container {name}",
                        src_path.display()
                    )));
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
                let items = items_of(&src_path, top.as_deref(), opts.follow, None)
                    .map_err(|e| format!("{}: {e}", src_path.display()))?;
                copy::write_tar(&items, writer).map_err(|e| e.to_string())?;
                Ok(())
            })
        });
        let host = (|| -> Result<u64> {
            let kind = kind_rx
                .recv()
                .map_err(|_| other("the container side of the copy failed"))?
                .map_err(other)?;
            if dest == "-" {
                let _ = top_tx.send(Some(src_name.clone()));
                let mut r = reader;
                return io::copy(&mut r, stdout)
                    .map_err(|e| other(format!("writing the archive: {e}")));
            }
            let (dest_path, _, must_dir) = clean_host(dest);
            let land = landing(
                kind,
                &src_name,
                src_contents,
                &dest_path,
                must_dir,
                probe(&dest_path),
            )
            .map_err(other)?;
            if !land.root.is_dir() {
                return Err(other(format!("{}: no such directory", land.root.display())));
            }
            let _ = top_tx.send(land.top.clone());
            unpack(reader, &land.root, &dest_path).map_err(other)
        })();
        drop(top_tx);
        let inner = inside
            .join()
            .map_err(|_| other("the copy thread panicked"))?;
        // What went wrong on the host (the destination) explains a broken stream best.
        let (n, ()) = both(host, inner, false)?;
        Ok(n)
    })
}

/// `kiln export`: the container's filesystem (image layers and its changes) as a tar
/// stream, one filesystem only: the mounts of a running container (`/proc`, `/sys`, `/dev`,
/// volumes, the generated `/etc` files) appear as their mount points, never their contents.
pub fn export(cs: &Containers, c: &Container, out: &mut (dyn Write + Send)) -> Result<()> {
    let (reader, writer) = io::pipe().map_err(|e| other(e.to_string()))?;
    std::thread::scope(|s| {
        let inside = s.spawn(|| {
            in_container(cs, c, move || -> std::result::Result<(), String> {
                let items = one_filesystem(Path::new("/")).map_err(|e| e.to_string())?;
                copy::write_tar(&items, writer).map_err(|e| e.to_string())?;
                Ok(())
            })
        });
        let mut r = reader;
        let copied = io::copy(&mut r, out).map_err(|e| other(format!("writing the archive: {e}")));
        drop(r);
        let inner = inside
            .join()
            .map_err(|_| other("the export thread panicked"))?;
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
    container: Result<std::result::Result<C, String>>,
    container_first: bool,
) -> Result<(H, C)> {
    let container = container.and_then(|r| r.map_err(other));
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
        src_kind_of(&src_path, opts.follow)
            .ok_or_else(|| other(format!("{}: no such file or directory", src_path.display())))?
    };
    check_contents(&src_path, src_contents, kind).map_err(other)?;
    let src_name = base_name(&src_path);
    let (dest_path, _, must_dir) = clean(dest);
    let (reader, writer) = io::pipe().map_err(|e| other(e.to_string()))?;
    let (land_tx, land_rx) = mpsc::channel::<std::result::Result<Option<String>, String>>();
    let name = c.config.name.clone();
    std::thread::scope(|s| {
        let inside = s.spawn(|| {
            in_container(cs, c, move || -> std::result::Result<u64, String> {
                let land = match landing(
                    kind,
                    &src_name,
                    src_contents,
                    &dest_path,
                    must_dir,
                    probe(&dest_path),
                ) {
                    Ok(l) if l.root.is_dir() => l,
                    Ok(l) => Err(format!(
                        "{}: no such directory in container {name}",
                        l.root.display()
                    ))?,
                    Err(e) => Err(format!("{e} (in container {name})"))?,
                };
                if land_tx.send(Ok(land.top.clone())).is_err() {
                    return Ok(0);
                }
                unpack(reader, &land.root, &dest_path)
            })
        });
        let host = (|| -> Result<()> {
            let top = land_rx
                .recv()
                .map_err(|_| other("the container side of the copy failed"))?
                .map_err(other)?;
            let mut w = writer;
            if kind == SrcKind::Stream {
                io::copy(stdin, &mut w).map_err(|e| other(format!("reading the archive: {e}")))?;
                return Ok(());
            }
            let owner = if opts.archive { None } else { Some((0, 0)) };
            let items = items_of(&src_path, top.as_deref(), opts.follow, owner)
                .map_err(|e| other(format!("{}: {e}", src_path.display())))?;
            copy::write_tar(&items, w).map_err(|e| other(e.to_string()))?;
            Ok(())
        })();
        let inner = inside
            .join()
            .map_err(|_| other("the copy thread panicked"))?;
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
}
