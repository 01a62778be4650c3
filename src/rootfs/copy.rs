//! COPY and ADD as Docker does them: which source lands where (directory contents, trailing
//! slashes, existing directories, globs, `--parents`, `--exclude`), with what owner and mode,
//! written as a tar stream that the hardened extractor then writes into the image root.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::context::ignore::{IgnoreRules, PatternError};
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
    /// `--chmod`.
    pub chmod: Option<Chmod>,
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
    /// A directory's contents copied onto something that is not a directory.
    #[error("cannot copy to non-directory: /{0}")]
    NotADirectory(String),
    /// A bad `--exclude` pattern.
    #[error("invalid --exclude pattern: {0}")]
    BadExclude(#[source] PatternError),
    /// `--chmod` is neither octal nor symbolic.
    #[error("invalid --chmod value {0:?}: expected an octal mode between 0 and 07777 (0755) or symbolic modes as chmod(1) takes them (u+x,go-w)")]
    BadChmod(String),
}

/// A `--chmod` value. BuildKit takes an octal number, or else chmod(1)'s symbolic modes
/// applied to each copied file's and directory's own mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// These permission bits for everything copied.
    Octal(u32),
    /// The text (for the cache key) and its clauses, applied in order.
    Symbolic(String, Vec<ModeOp>),
}

/// One operation of a symbolic mode: `who` `op` `perm` (`u+x`), or a copy of one class's
/// bits (`g=u`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeOp {
    /// The bits the clause may touch: the `who` classes (with their set-id bits); every
    /// class when no `who` is given (chmod(1) with a zero umask).
    who: u32,
    /// `+`, `-` or `=`.
    op: u8,
    /// The bits `r`, `w`, `x`, `s`, `t` name (spread over all classes, masked by `who`).
    perm: u32,
    /// `X`: execute, for directories and files some class may execute already.
    cond_x: bool,
    /// `u`, `g` or `o`: take the permissions of that class (as it is at this point).
    copy: Option<u8>,
}

const SET_ID: u32 = 0o6000;
const STICKY: u32 = 0o1000;
/// Every class with its set-id bit: what `a` (or no `who`) names.
const ALL: u32 = 0o6777;

impl Chmod {
    /// Parse a `--chmod` value: octal up to 07777, else symbolic
    /// (`[ugoa]*([-+=]([rwxXst]*|[ugo]))+`, clauses separated by `,`).
    pub fn parse(s: &str) -> Result<Chmod, CopyError> {
        let bad = || CopyError::BadChmod(s.to_string());
        if s.starts_with(|c: char| c.is_ascii_digit()) {
            return u32::from_str_radix(s, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Chmod::Octal)
                .ok_or_else(bad);
        }
        let mut ops = Vec::new();
        for clause in s.split(',') {
            let b = clause.as_bytes();
            let mut i = 0;
            let mut who = 0;
            while let Some(c) = b.get(i) {
                who |= match c {
                    b'u' => 0o4700,
                    b'g' => 0o2070,
                    b'o' => 0o0007,
                    b'a' => ALL,
                    _ => break,
                };
                i += 1;
            }
            // At least one action.
            if !matches!(b.get(i), Some(b'+' | b'-' | b'=')) {
                return Err(bad());
            }
            while let Some(&op) = b.get(i).filter(|c| matches!(c, b'+' | b'-' | b'=')) {
                i += 1;
                let mut o = ModeOp {
                    who: if who == 0 { ALL } else { who },
                    op,
                    perm: 0,
                    cond_x: false,
                    copy: None,
                };
                if let Some(&c @ (b'u' | b'g' | b'o')) = b.get(i) {
                    o.copy = Some(c);
                    i += 1;
                } else {
                    while let Some(c) = b.get(i) {
                        match c {
                            b'r' => o.perm |= 0o444,
                            b'w' => o.perm |= 0o222,
                            b'x' => o.perm |= 0o111,
                            // `-X` takes execute away like `-x`.
                            b'X' if op == b'-' => o.perm |= 0o111,
                            b'X' => o.cond_x = true,
                            // Set-id and sticky bits mean nothing for `o` alone.
                            b's' if who != 0o0007 => o.perm |= SET_ID,
                            b't' if who != 0o0007 => {
                                o.perm |= STICKY;
                                o.who |= STICKY;
                            }
                            b's' | b't' => {}
                            _ => break,
                        }
                        i += 1;
                    }
                }
                ops.push(o);
            }
            if i != b.len() {
                return Err(bad());
            }
        }
        Ok(Chmod::Symbolic(s.to_string(), ops))
    }

    /// The mode something of mode `mode` (permission bits) gets.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let ops = match self {
            Chmod::Octal(m) => return *m,
            Chmod::Symbolic(_, ops) => ops,
        };
        let orig = mode & 0o7777;
        let mut m = orig;
        for o in ops {
            let mut add = o.perm;
            if o.cond_x && (is_dir || orig & 0o111 != 0) {
                add |= 0o111;
            }
            if let Some(from) = o.copy {
                let bits = match from {
                    b'u' => (m >> 6) & 7,
                    b'g' => (m >> 3) & 7,
                    _ => m & 7,
                };
                add = bits * 0o111;
            }
            match o.op {
                b'+' => m |= add & o.who,
                b'-' => m &= !(add & o.who),
                _ => {
                    // `=`: the classes named lose what they had (set-id bits included,
                    // the sticky bit only when `t` is given), then get exactly `perm`.
                    let clear = if o.copy.is_some() {
                        o.who & 0o777
                    } else {
                        o.who
                    };
                    m = (m & !clear) | (add & o.who);
                }
            }
        }
        m
    }

    /// The bits a directory that the copy creates gets: octal modes apply to it (fsutil
    /// creates it with that mode); symbolic ones do not (0755).
    pub fn created_dir_mode(chmod: Option<&Chmod>) -> u32 {
        match chmod {
            Some(Chmod::Octal(m)) => *m,
            _ => 0o755,
        }
    }

    /// Its cache-key text (octal as `{:o}`, as before symbolic modes existed).
    pub fn key(&self) -> String {
        match self {
            Chmod::Octal(m) => format!("{m:o}"),
            Chmod::Symbolic(s, _) => s.clone(),
        }
    }
}

/// Parse a `--chmod` value (see [`Chmod::parse`]).
pub fn parse_chmod(s: &str) -> Result<Chmod, CopyError> {
    Chmod::parse(s)
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

/// What the image has at a path (symlinks followed inside its root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Nothing.
    Nothing,
    /// A directory.
    Dir,
    /// A file, symlink or anything else that is not a directory.
    Other,
}

/// Where each source lands. `dest` is absolute (WORKDIR already applied, symlinks resolved
/// inside the image); `probe` tells what the image has at a path.
///
/// As BuildKit does it, each source is copied in turn onto what the earlier ones left: a
/// directory's contents go into the destination (created 0755, or the octal `--chmod`,
/// owned by root or the `--chown` user, when it is new; an error when it is a file); a file
/// goes into the destination when that is a directory or ends with `/`, else becomes it
/// (`COPY a b /notadir`: the last one wins).
pub fn plan(
    sources: &[Source],
    dest: &str,
    probe: &dyn Fn(&str) -> Existing,
    opts: &CopyOptions,
) -> Result<Vec<Item>, CopyError> {
    let mut planner = Planner {
        probe,
        opts,
        exclude: IgnoreRules::from_patterns(&opts.exclude).map_err(CopyError::BadExclude)?,
        dest_rel: crate::context::ignore::clean_path(&format!("/{dest}"))
            .trim_start_matches('/')
            .to_string(),
        trailing: dest.ends_with('/') || dest.ends_with("/."),
        planned: HashMap::new(),
        items: Vec::new(),
    };
    for s in sources {
        planner.add_source(s)?;
    }
    Ok(last_file_wins(planner.items))
}

/// The state of one [`plan`]: the COPY's destination and flags, and what the sources
/// planned so far put where.
struct Planner<'a> {
    probe: &'a dyn Fn(&str) -> Existing,
    opts: &'a CopyOptions,
    exclude: IgnoreRules,
    /// The destination, relative to `/`, cleaned.
    dest_rel: String,
    /// The destination ends with `/` (or `/.`): it must be a directory.
    trailing: bool,
    /// What this COPY has put at a path so far, over what the image has.
    planned: HashMap<String, Existing>,
    items: Vec<Item>,
}

impl Planner<'_> {
    /// What is at `p` once the sources planned so far are copied.
    fn kind_of(&self, p: &str) -> Existing {
        if p.is_empty() {
            return Existing::Dir;
        }
        self.planned
            .get(p)
            .copied()
            .unwrap_or_else(|| (self.probe)(p))
    }

    /// Plans the items of one source: where it lands, then each of its entries that is
    /// not excluded, with its owner and mode.
    fn add_source(&mut self, s: &Source) -> Result<(), CopyError> {
        let Some(top) = s.entries.first() else {
            return Ok(());
        };
        let target_base = self.target_base(s, top)?;
        let base_existed = self.kind_of(&target_base);
        for e in &s.entries {
            let under = e
                .rel
                .strip_prefix(&s.rel)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(&e.rel);
            if !under.is_empty() && self.exclude.is_excluded(under) {
                continue;
            }
            let top_dir = under.is_empty() && top.kind == Kind::Dir && !self.opts.parents;
            // The destination directory itself keeps what it has when it exists already.
            if top_dir && base_existed == Existing::Dir {
                continue;
            }
            let name = join(&target_base, under);
            if name.is_empty() {
                continue;
            }
            let Some(kind) = item_kind(e) else {
                continue;
            };
            let ((uid, gid), mode) = self.owner_and_mode(e, &kind, top_dir);
            self.items.push(Item {
                name,
                kind,
                mode,
                uid,
                gid,
                mtime: e.mtime,
            });
        }
        let landed = if top.kind == Kind::Dir {
            Existing::Dir
        } else {
            Existing::Other
        };
        self.planned.insert(target_base, landed);
        Ok(())
    }

    /// Where the source `s` (whose first entry is `top`) lands: its own path under the
    /// destination with `--parents`, else the destination for a directory's contents, a
    /// file in the destination directory, or the destination itself.
    fn target_base(&self, s: &Source, top: &SourceEntry) -> Result<String, CopyError> {
        let dest_kind = self.kind_of(&self.dest_rel);
        if self.trailing && dest_kind == Existing::Other {
            return Err(CopyError::NotADirectory(self.dest_rel.clone()));
        }
        // With --parents the source keeps its path below the context root.
        Ok(if self.opts.parents {
            join(&self.dest_rel, &s.rel)
        } else if top.kind == Kind::Dir {
            if dest_kind == Existing::Other {
                return Err(CopyError::NotADirectory(self.dest_rel.clone()));
            }
            self.dest_rel.clone()
        } else if self.trailing || dest_kind == Existing::Dir {
            join(&self.dest_rel, base_name(&s.rel))
        } else {
            self.dest_rel.clone()
        })
    }

    /// The owner and permission bits of the item made from `e`.
    fn owner_and_mode(&self, e: &SourceEntry, kind: &ItemKind, top_dir: bool) -> ((u32, u32), u32) {
        let opts = self.opts;
        // A destination directory the copy creates is made, not copied: 0755 (or the
        // octal --chmod) and root's (or the --chown user's), whatever the source
        // directory's mode and owner.
        if top_dir {
            return (
                opts.chown.unwrap_or((0, 0)),
                Chmod::created_dir_mode(opts.chmod.as_ref()),
            );
        }
        let mode = match (&opts.chmod, kind) {
            (_, ItemKind::Symlink(_)) => 0o777,
            (Some(c), ItemKind::File(_) | ItemKind::ContextFile(_) | ItemKind::Dir) => {
                c.apply(e.mode, *kind == ItemKind::Dir)
            }
            _ => e.mode,
        };
        let owner = match opts.chown {
            Some(o) => o,
            None if opts.keep_owner => (e.uid, e.gid),
            None => (0, 0),
        };
        (owner, mode)
    }
}

/// What a source entry is copied as; `None` for what is not copied (sockets, devices).
fn item_kind(e: &SourceEntry) -> Option<ItemKind> {
    Some(match (e.kind, &e.context) {
        (Kind::File, Some(f)) => ItemKind::ContextFile(f.clone()),
        (Kind::File, None) => ItemKind::File(e.host.clone()),
        (Kind::Dir, _) => ItemKind::Dir,
        (Kind::Symlink, _) => ItemKind::Symlink(e.link.clone().unwrap_or_default()),
        // A FIFO is copied as a FIFO, as BuildKit does (fsutil's copy makes one).
        (Kind::Other, _) if e.fifo => ItemKind::Fifo,
        // Sockets and devices are not copied.
        (Kind::Other, _) => return None,
    })
}

/// Drops every non-directory item that a later one of the same name replaces
/// (`COPY a b /notadir`).
fn last_file_wins(mut items: Vec<Item>) -> Vec<Item> {
    let mut last = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        if it.kind != ItemKind::Dir {
            last.insert(it.name.clone(), i);
        }
    }
    let mut i = 0;
    items.retain(|it| {
        let keep = it.kind == ItemKind::Dir || last.get(&it.name) == Some(&i);
        i += 1;
        keep
    });
    items
}

/// The directories above `items` that the image lacks (`exists` says what it has), as items
/// owned by `owner` with permission bits `mode`, parents first: with `--chown`, Docker gives
/// the directories a COPY creates to that owner too (both builders), and BuildKit makes
/// them with an octal `--chmod`'s mode, where the extractor would make them 0755 root's.
pub fn missing_parents(
    items: &[Item],
    exists: &dyn Fn(&str) -> bool,
    owner: (u32, u32),
    mode: u32,
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
            mode,
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
        let none = |_: &str| Existing::Nothing;
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
        let app_exists = |p: &str| {
            if p == "app" {
                Existing::Dir
            } else {
                Existing::Nothing
            }
        };
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
            names(&plan(&dir, "/dst", &dir_at("dst"), &opts).unwrap()),
            ["dst/sub", "dst/sub/y.rs", "dst/x.rs"]
        );
        // Several files to a path that is not a directory: each replaces the one before,
        // as BuildKit copies them (the last one wins).
        let two = [context_source(&c, "a.txt"), context_source(&c, "b.txt")];
        let items = plan(&two, "/app", &none, &opts).unwrap();
        assert_eq!(names(&items), ["app"]);
        assert!(matches!(&items[0].kind, ItemKind::ContextFile(f) if f.key() == "b.txt"));
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
    fn a_bad_exclude_keeps_the_pattern_error_as_its_source() {
        let (_d, c) = ctx_with(&["a.txt"]);
        let opts = CopyOptions {
            exclude: vec!["[a-".into()],
            ..Default::default()
        };
        let err = plan(
            &[context_source(&c, "a.txt")],
            "/app/",
            &|_: &str| Existing::Nothing,
            &opts,
        )
        .unwrap_err();
        let CopyError::BadExclude(pattern) = &err else {
            panic!("not a bad exclude: {err:?}");
        };
        assert!(matches!(pattern, PatternError::Syntax { pattern, .. } if pattern == "[a-"));
        assert_eq!(
            err.to_string(),
            "invalid --exclude pattern: syntax error in pattern \"[a-\""
        );
        // The chain goes on to the matcher's own error.
        let cause = std::error::Error::source(&err).expect("a pattern error");
        assert!(cause.source().is_some(), "{cause}");
    }

    #[test]
    fn owners_and_modes() {
        let (_d, c) = ctx_with(&["f"]);
        let none = |_: &str| Existing::Nothing;
        let src = [context_source(&c, "f")];
        let it = &plan(&src, "/f", &none, &CopyOptions::default()).unwrap()[0];
        assert_eq!((it.uid, it.gid), (0, 0), "context files become root's");
        let o = CopyOptions {
            chown: Some((10, 20)),
            chmod: Some(Chmod::Octal(0o640)),
            ..Default::default()
        };
        let it = &plan(&src, "/f", &none, &o).unwrap()[0];
        assert_eq!((it.uid, it.gid, it.mode), (10, 20, 0o640));
    }

    fn dir_at(dir: &'static str) -> impl Fn(&str) -> Existing {
        move |p: &str| {
            if p == dir {
                Existing::Dir
            } else {
                Existing::Nothing
            }
        }
    }

    // Regression (BuildKit golden copy-chmod-symbolic): `--chmod=u+x,g-r` was refused; BuildKit
    // takes chmod(1)'s symbolic modes, applied to each file's own mode.
    #[test]
    fn parse_chmod_takes_octal_and_symbolic_modes() {
        let ap = |s: &str, mode: u32, dir: bool| parse_chmod(s).unwrap().apply(mode, dir);
        assert_eq!(parse_chmod("755"), Ok(Chmod::Octal(0o755)));
        assert_eq!(parse_chmod("0640"), Ok(Chmod::Octal(0o640)));
        assert_eq!(parse_chmod("7777"), Ok(Chmod::Octal(0o7777)));
        // (text, mode, is a directory, result)
        let cases: &[(&str, u32, bool, u32)] = &[
            ("u+x,g-r", 0o644, false, 0o704),
            ("go-rwx", 0o755, true, 0o700),
            ("go-rwx", 0o644, false, 0o600),
            ("a=r", 0o755, false, 0o444),
            ("=r", 0o4755, false, 0o444),
            ("+x", 0o644, false, 0o755),
            ("u=rwx,go=rx", 0o600, false, 0o755),
            ("o=", 0o777, false, 0o770),
            ("g=u", 0o640, false, 0o660),
            ("go=u-w", 0o750, false, 0o755),
            ("a+X", 0o644, false, 0o644),
            ("a+X", 0o744, false, 0o755),
            ("a+X", 0o600, true, 0o711),
            ("a-X", 0o755, false, 0o644),
            ("u+s", 0o755, false, 0o4755),
            ("g+s", 0o755, true, 0o2755),
            ("+t", 0o755, true, 0o1755),
            ("o+t", 0o755, true, 0o755),
            ("u-s", 0o6755, false, 0o2755),
            ("u+w-x", 0o555, false, 0o655),
            ("ug+rw,o-rwx", 0o444, false, 0o660),
        ];
        for &(text, mode, dir, want) in cases {
            assert_eq!(ap(text, mode, dir), want, "{text} on {mode:o}");
        }
        for bad in [
            "", "u", "u+x,", ",u+x", "u+y", "z+x", "8", "0o755", "10000", "u+x g-w", "+x ", "-",
        ] {
            if bad == "-" {
                // A lone operator is a valid clause that changes nothing.
                assert_eq!(ap(bad, 0o644, false), 0o644);
                continue;
            }
            assert!(parse_chmod(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_chmod("u+x").unwrap().key(), "u+x");
        assert_eq!(parse_chmod("0755").unwrap().key(), "755");
    }

    // Regression (goldens copy-dir-private-dest-mode, -chown, multistage-copy-from-chown,
    // copy-chmod-symbolic-dir): the directory a COPY of a directory's contents creates took
    // the source directory's mode (0700) and, from a stage, its owner.
    #[test]
    fn a_created_destination_directory_is_0755_and_the_copys_owner() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("private/sub")).unwrap();
        fs::write(d.path().join("private/f"), "f").unwrap();
        use std::os::unix::fs::PermissionsExt;
        for p in ["private", "private/sub"] {
            fs::set_permissions(d.path().join(p), fs::Permissions::from_mode(0o700)).unwrap();
        }
        let c = Context::scan(d.path(), &IgnoreRules::default()).unwrap();
        let none = |_: &str| Existing::Nothing;
        let src = [context_source(&c, "private")];
        let modes = |o: &CopyOptions| -> Vec<(String, u32, u32)> {
            plan(&src, "/p/", &none, o)
                .unwrap()
                .iter()
                .map(|i| (i.name.clone(), i.mode, i.uid))
                .collect()
        };
        let m = |n: &str, mode, uid| (n.to_string(), mode, uid);
        assert_eq!(
            modes(&CopyOptions::default()),
            [m("p", 0o755, 0), m("p/f", 0o644, 0), m("p/sub", 0o700, 0)]
        );
        let chown = CopyOptions {
            chown: Some((1000, 1000)),
            ..Default::default()
        };
        assert_eq!(
            modes(&chown),
            [
                m("p", 0o755, 1000),
                m("p/f", 0o644, 1000),
                m("p/sub", 0o700, 1000)
            ]
        );
        // From a stage (owners kept) the created directory is still root's.
        let stage = CopyOptions {
            keep_owner: true,
            ..Default::default()
        };
        assert_eq!(modes(&stage)[0], m("p", 0o755, 0));
        // An octal --chmod gives the created directory its mode; a symbolic one does not.
        let octal = CopyOptions {
            chmod: Some(Chmod::Octal(0o700)),
            ..Default::default()
        };
        assert_eq!(modes(&octal)[0], m("p", 0o700, 0));
        let symbolic = CopyOptions {
            chmod: Some(parse_chmod("go-rwx").unwrap()),
            ..Default::default()
        };
        assert_eq!(
            modes(&symbolic),
            [m("p", 0o755, 0), m("p/f", 0o600, 0), m("p/sub", 0o700, 0)]
        );
    }

    // Regression (golden copy-dir-onto-file): `COPY dir /etc/passwd` replaced nothing and
    // wrote the directory's contents below a file; BuildKit refuses it.
    #[test]
    fn a_directory_onto_a_file_is_refused() {
        let (_d, c) = ctx_with(&["dir/x", "a.txt"]);
        let file_at = |p: &str| {
            if p == "etc/passwd" {
                Existing::Other
            } else {
                Existing::Nothing
            }
        };
        let dir = [context_source(&c, "dir")];
        let o = CopyOptions::default();
        assert_eq!(
            plan(&dir, "/etc/passwd", &file_at, &o),
            Err(CopyError::NotADirectory("etc/passwd".into()))
        );
        assert!(plan(&dir, "/etc/passwd/", &file_at, &o).is_err());
        // A file source first, then a directory onto what it became.
        let none = |_: &str| Existing::Nothing;
        let both = [context_source(&c, "a.txt"), context_source(&c, "dir")];
        assert!(plan(&both, "/new", &none, &o).is_err());
        // The other way round, the file goes into the directory the first one made.
        let both = [context_source(&c, "dir"), context_source(&c, "a.txt")];
        assert_eq!(
            names(&plan(&both, "/new", &none, &o).unwrap()),
            ["new", "new/x", "new/a.txt"]
        );
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
        let parents = missing_parents(&items, &exists, (7, 8), 0o755, 0);
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
        let none = |_: &str| Existing::Nothing;
        let items = plan(&[s], "/out/", &none, &CopyOptions::default()).unwrap();
        assert_eq!(names(&items), ["out", "out/x"]);
    }

    #[test]
    fn tar_stream_round_trips_through_the_extractor() {
        let (_d, c) = ctx_with(&["src/x.rs", "top.txt"]);
        let none = |_: &str| Existing::Nothing;
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
        let none = |_: &str| Existing::Nothing;
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
        let none = |_: &str| Existing::Nothing;
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
