//! COPY and ADD: resolve the sources → compute the key → look it up → materialise the copy
//! through the overlay view (or straight into the layer) → commit the layer.

use std::collections::BTreeMap;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use crate::archive::{self, ExtractOptions};
use crate::cache::KeyBuilder;
use crate::context::select::{confine, select, Selected};
use crate::context::{self, ContextFile};
use crate::planner::ops::{parse_checksum, CopyKind, CopyOp, Op};
use crate::planner::Location;
use crate::planner::Source as PlanSource;

use super::direct::{self, DirectWrite};
use super::error::{CopyError, FromError};
use super::remote::{self, Download, GitSource, RemoteError, RemoteKind};
use super::{BuildError, BuildEvent, Builder, StageResult};
use crate::rootfs::copy::{self, Chmod, CopyOptions, Item, ItemKind};
use crate::rootfs::layers::{change_then, FsError};
use crate::rootfs::lookup;

/// Part of every COPY/ADD key: changed whenever a COPY of the same inputs writes something
/// else, so entries an older kiln made are not reused. 2: a `--from` source that is a symlink
/// is followed, `--chown` owns the parents it creates, `--chown=UID` means `UID:UID`. 3: as
/// BuildKit: context source symlinks followed, destination symlinks written through, a
/// created destination directory 0755 and the copy's owner, an empty layer for a copy of
/// nothing.
const COPY_SEMANTICS: &str = "3";

/// A resolved `--from`: a stage (index, key) or an image (layers, manifest digest).
pub(crate) enum FromRef {
    Stage(usize, String),
    Image(Vec<crate::cache::LayerRef>, String),
}

/// Where a COPY's files come from.
enum CopyFrom {
    Context(Vec<Selected>),
    Stage(usize, Vec<String>),
    Image(Vec<crate::cache::LayerRef>, Vec<String>),
}

/// A COPY's words, expanded with the stage's variables, and its sources sorted by kind.
struct CopyWords {
    sources: Vec<String>,
    urls: Vec<String>,
    gits: Vec<GitSource>,
    locals: Vec<String>,
    checksum: Option<String>,
    /// Absolute, keeping a trailing `/`.
    dest: String,
    chown: Option<String>,
    chmod: Option<Chmod>,
    exclude: Vec<String>,
    /// Heredoc sources: name and content.
    contents: Vec<(String, Vec<u8>)>,
}

/// The remote sources, fetched (URLs) or resolved to a commit (git).
#[derive(Default)]
struct Remote {
    downloads: Vec<(String, Download)>,
    commits: Vec<String>,
}

impl Builder<'_> {
    /// COPY or ADD.
    pub(crate) fn copy_step(
        &self,
        id: usize,
        cur: &mut StageResult,
        op: &Op,
        c: &CopyOp,
        stages: &BTreeMap<usize, StageResult>,
        position: &str,
    ) -> Result<(), BuildError> {
        let at = BuildError::at::<CopyError>(op.location);
        let words = expand_copy(cur, c).map_err(&at)?;
        let mut key = copy_key(cur, op, c, &words);
        let mut inputs = BTreeMap::new();
        let remote = self
            .resolve_remote(id, c, &words, &mut key, &mut inputs)
            .map_err(&at)?;
        let from = self.resolve_sources(id, cur, c, &words, stages, &mut key, op.location)?;
        let key = key.finish();
        inputs.insert("instruction".into(), op.code.clone());
        for (k, v) in cur.state.arg_values() {
            if op.code.contains(&k) {
                inputs.insert(format!("arg:{k}"), v);
            }
        }
        // Described only when the record of the last build cannot be reused (see lookup).
        let mut describe = || self.describe_copy(&inputs, &from);
        if self.lookup(Some(id), position, &key, &mut describe, cur) {
            self.settle_key(&key, cur);
            return Ok(());
        }
        let layer = self.materialise(id, cur, c, words, remote, from, stages, position, op)?;
        cur.state.layers.push(layer);
        self.history(cur, format!("{} # kiln", op.code), true);
        self.settle_key(&key, cur);
        self.remember(&key, cur, inputs);
        Ok(())
    }

    /// Fetch the URLs (on every build, as BuildKit does: their content, not their URL, is
    /// what the key sees) and resolve each repository's branch or tag to a commit, which the
    /// key holds: an unchanged one is a cache hit without any clone.
    fn resolve_remote(
        &self,
        id: usize,
        c: &CopyOp,
        words: &CopyWords,
        key: &mut KeyBuilder,
        inputs: &mut BTreeMap<String, String>,
    ) -> Result<Remote, CopyError> {
        let mut remote = Remote::default();
        for url in &words.urls {
            self.progress.event(BuildEvent::Output {
                id,
                text: format!("fetching {url}\n"),
            });
            let d = remote::fetch(url, &self.store.tmp_dir(), self.cancel.as_deref())
                .map_err(CopyError::from)?;
            if let Some(want) = &words.checksum {
                if *want != d.digest {
                    return Err(CopyError::ChecksumMismatch {
                        url: url.clone(),
                        want: want.clone(),
                        got: d.digest.clone(),
                    });
                }
            }
            self.progress.event(BuildEvent::Output {
                id,
                text: format!("{url}: {} bytes, {}\n", d.size, d.digest),
            });
            key.text("url", url)
                .text("url-content", &d.digest)
                .text("url-mtime", &d.mtime.unwrap_or(0).to_string());
            inputs.insert(format!("url:{url}"), d.digest.clone());
            remote.downloads.push((url.clone(), d));
        }
        for g in &words.gits {
            let commit = remote::git_resolve(g).map_err(CopyError::from)?;
            self.progress.event(BuildEvent::Output {
                id,
                text: format!("{}#{} is {commit}\n", g.url, g.reference),
            });
            key.text("git", &g.url)
                .text("git-ref", &g.reference)
                .text("git-commit", &commit)
                .text("git-subdir", &g.subdir)
                .text("git-keep-dir", if c.keep_git_dir { "1" } else { "0" });
            inputs.insert(format!("git:{}#{}", g.url, g.reference), commit.clone());
            remote.commits.push(commit);
        }
        Ok(remote)
    }

    /// The local sources: selected in the context (and hashed into the key), or paths in a
    /// `--from` stage or image (whose key or digest the key names).
    #[allow(clippy::too_many_arguments)]
    fn resolve_sources(
        &self,
        id: usize,
        cur: &StageResult,
        c: &CopyOp,
        words: &CopyWords,
        stages: &BTreeMap<usize, StageResult>,
        key: &mut KeyBuilder,
        location: Location,
    ) -> Result<CopyFrom, BuildError> {
        let at = BuildError::at::<CopyError>(location);
        let Some(f) = &c.from else {
            if words.locals.is_empty() {
                return Ok(CopyFrom::Context(Vec::new()));
            }
            return self
                .select_context(id, c, words, key)
                .map(CopyFrom::Context)
                .map_err(at);
        };
        let value = cur
            .state
            .expand(f)
            .map_err(|e| BuildError::at::<FromError>(location)(e.into()))?;
        let paths = words.sources.iter().map(|s| confine(s)).collect();
        Ok(match self.resolve_from(&value, stages, location)? {
            FromRef::Stage(i, k) => {
                key.text("from-stage", &k);
                CopyFrom::Stage(i, paths)
            }
            FromRef::Image(layers, digest) => {
                key.text("from-image", &digest);
                CopyFrom::Image(layers, paths)
            }
        })
    }

    /// Select the local sources in the context and hash what they name into the key.
    fn select_context(
        &self,
        id: usize,
        c: &CopyOp,
        words: &CopyWords,
        key: &mut KeyBuilder,
    ) -> Result<Vec<Selected>, CopyError> {
        let mut guard = self.context()?;
        let (ctx, cache) = guard.as_mut().expect("scanned by context()");
        let mut paths = Vec::new();
        for s in &words.locals {
            // Symlinks given as sources are followed inside the context, as BuildKit does;
            // with --parents a source is copied as it is listed.
            let found = select(ctx, s, !c.parents)?;
            if found.is_empty() {
                // BuildKit copies nothing for a pattern that matches nothing.
                self.progress.event(BuildEvent::Output {
                    id,
                    text: format!(
                        "warning: \"{s}\" matches nothing in the build context; nothing copied for it\n"
                    ),
                });
            }
            paths.extend(found);
        }
        let refs: Vec<&str> = paths.iter().map(|p| p.key.as_str()).collect();
        ctx.hash_contents(&refs, cache)?;
        for p in &paths {
            let h = ctx
                .tree_hash(&p.key)
                .ok_or_else(|| CopyError::Changed(p.name.clone()))?;
            key.text("source", &p.name)
                .text("resolved", &p.key)
                .field("tree", &h);
        }
        Ok(paths)
    }

    /// The step's inputs for the build record: every context file it copies.
    fn describe_copy(
        &self,
        inputs: &BTreeMap<String, String>,
        from: &CopyFrom,
    ) -> BTreeMap<String, String> {
        let mut m = inputs.clone();
        let paths = match from {
            CopyFrom::Context(paths) if !paths.is_empty() => paths,
            _ => return m,
        };
        let Ok(guard) = self.context() else { return m };
        let Some((ctx, _)) = guard.as_ref() else {
            return m;
        };
        for p in paths {
            for (k, e) in ctx.subtree(&p.key) {
                let what = match (e.kind, ctx.content_hash(k)) {
                    (context::Kind::File, Some(h)) => context::hex(h),
                    (context::Kind::Symlink, _) => {
                        format!("-> {}", e.link_target.as_deref().unwrap_or(""))
                    }
                    _ => "dir".to_string(),
                };
                m.insert(
                    format!("file:{k}"),
                    format!("{:o}:{}:{}:{what}", e.mode & 0o7777, e.uid, e.gid),
                );
            }
        }
        m
    }

    /// Write the copy: through the overlay view, or (a COPY that only adds new paths) after
    /// the overlay is gone, straight into the layer's directory, hard-linking what the
    /// previous build's snapshot of this step has unchanged. A copy of nothing still adds a
    /// layer, an empty one, as BuildKit does for every COPY and ADD.
    #[allow(clippy::too_many_arguments)]
    fn materialise(
        &self,
        id: usize,
        cur: &StageResult,
        c: &CopyOp,
        words: CopyWords,
        remote: Remote,
        from: CopyFrom,
        stages: &BTreeMap<usize, StageResult>,
        position: &str,
        op: &Op,
    ) -> Result<crate::cache::LayerRef, BuildError> {
        let fs_at = BuildError::at::<FsError>(op.location);
        let at = BuildError::at::<CopyError>(op.location);
        let (source_layers, stage_paths) = match &from {
            CopyFrom::Stage(i, paths) => (vec![stages[i].state.layers.clone()], paths.clone()),
            CopyFrom::Image(layers, paths) => (vec![layers.clone()], paths.clone()),
            CopyFrom::Context(_) => (Vec::new(), Vec::new()),
        };
        let local_keys: Vec<String> = match &from {
            CopyFrom::Context(paths) => paths.iter().map(|s| s.key.clone()).collect(),
            _ => Vec::new(),
        };
        let (ctx_srcs, archives) = self.context_sources(&from, c.unpack)?;
        let mut checkouts = Vec::new();
        for (g, commit) in words.gits.iter().zip(&remote.commits) {
            self.progress.event(BuildEvent::Output {
                id,
                text: format!("fetching {} at {commit}\n", g.url),
            });
            let dir = remote::git_checkout(g, commit, c.keep_git_dir, &self.store.tmp_dir())
                .map_err(|e| at(e.into()))?;
            checkouts.push((g.subdir.clone(), dir));
        }
        let clamp = self.req.source_date_epoch;
        let plan = CopyPlan {
            opts: CopyOptions {
                chown: None,
                chmod: words.chmod.clone(),
                parents: c.parents,
                exclude: words.exclude.clone(),
                keep_owner: !matches!(from, CopyFrom::Context(..)),
            },
            chown: words.chown.clone(),
            ctx_srcs,
            stage_paths,
            checkouts: checkouts
                .iter()
                .map(|(s, d)| (s.clone(), d.path().to_path_buf()))
                .collect(),
            dest: words.dest.clone(),
            contents: words.contents,
            downloads: remote
                .downloads
                .iter()
                .map(|(u, d)| (u.clone(), d.file.path().to_path_buf(), d.mtime))
                .collect(),
            many_sources: words.sources.len() + c.contents.len() > 1,
            archives,
            clamp,
        };
        let work = |merged: &Path, roots: &[PathBuf], lowers: &[PathBuf]| {
            write_copy(plan, merged, roots, lowers)
        };
        let then = |r: Result<Option<DirectWrite>, CopyError>, upper: &Path| match r {
            Ok(Some(plan)) => {
                let hashed = self
                    .context_hashes(&local_keys)
                    .map_err(|e| FsError::Io(e.to_string()))?;
                let links = self
                    .previous_snapshot(position)
                    .and_then(|d| direct::LinkSource::open(&d));
                direct::write(&plan, upper, &hashed, links.as_ref())
                    .map(|index| (Ok(()), Some(index)))
                    .map_err(|e| FsError::Io(e.to_string()))
            }
            Ok(None) => Ok((Ok(()), None)),
            Err(e) => Ok((Err(e), None)),
        };
        let (result, layer) = change_then(
            self.store,
            &cur.state.layers,
            &source_layers,
            clamp,
            false,
            work,
            then,
        )
        .map_err(&fs_at)?;
        result.map_err(&at)?;
        match layer {
            Some(l) => Ok(l),
            None => {
                let empty = crate::rootfs::layers::scratch_dir(self.store).map_err(&fs_at)?;
                crate::rootfs::layers::commit_dir(self.store, empty.path(), clamp).map_err(&fs_at)
            }
        }
    }

    /// Context sources, listed now so the copy itself does not hold the context; with ADD,
    /// local archives apart (they are unpacked, not copied).
    fn context_sources(
        &self,
        from: &CopyFrom,
        unpack: bool,
    ) -> Result<(Vec<copy::Source>, Vec<ContextFile>), BuildError> {
        let mut ctx_srcs = Vec::new();
        let mut archives = Vec::new();
        let paths = match from {
            CopyFrom::Context(paths) if !paths.is_empty() => paths,
            _ => return Ok((ctx_srcs, archives)),
        };
        let guard = self.context()?;
        let (ctx, _) = guard.as_ref().expect("scanned by context()");
        for p in paths {
            // Read through the checked context file (no symlink, the listed inode): a
            // followed symlink is read as the entry it resolved to, under its own name.
            let archive = ctx.file(&p.key).filter(|f| unpack && is_local_archive(f));
            match archive {
                Some(f) => archives.push(f),
                None if p.key == p.name => ctx_srcs.push(copy::context_source(ctx, &p.key)),
                None => ctx_srcs.push(copy::context_source(ctx, &p.key).renamed(&p.name)),
            }
        }
        Ok((ctx_srcs, archives))
    }

    /// A `--from` value (COPY, RUN --mount): a built stage (its index and key), or an image
    /// of the store or a named context (its layers and what names it).
    pub(crate) fn resolve_from(
        &self,
        value: &str,
        stages: &BTreeMap<usize, StageResult>,
        location: Location,
    ) -> Result<FromRef, BuildError> {
        let at = BuildError::at::<FromError>(location);
        match self
            .plan
            .resolve_source(value, location)
            .map_err(|e| at(FromError::Plan(Box::new(e))))?
        {
            PlanSource::Stage(i) => {
                let src = stages
                    .get(&i)
                    .ok_or_else(|| at(FromError::NotBuilt(value.to_string())))?;
                Ok(FromRef::Stage(i, src.key.to_string()))
            }
            PlanSource::Image(name) => {
                // Images named by `--from` are taken for the build's target platform.
                let rec = self.image(
                    &name,
                    (&self.plan.target_platform, self.plan.target_given),
                    location,
                )?;
                let layers = super::image_layers(&rec);
                Ok(FromRef::Image(layers, rec.manifest_digest.to_string()))
            }
            PlanSource::Context(name) => {
                let ctx = self.named_context(&name, location)?;
                Ok(FromRef::Image(ctx.layers.clone(), ctx.ident.clone()))
            }
        }
    }
}

/// Expand the op's words with the stage's variables and sort its sources by kind.
fn expand_copy(cur: &StageResult, c: &CopyOp) -> Result<CopyWords, CopyError> {
    let st = &cur.state;
    let add = c.kind == CopyKind::Add;
    let sources = c
        .sources
        .iter()
        .map(|s| st.expand(s))
        .collect::<Result<Vec<_>, _>>()?;
    let (mut urls, mut gits, mut locals) = (Vec::new(), Vec::new(), Vec::new());
    for s in &sources {
        match remote::remote_kind(s) {
            Some(_) if !add => return Err(CopyError::UrlInCopy(s.clone())),
            Some(RemoteKind::Http) => urls.push(s.clone()),
            Some(RemoteKind::Git) => gits.push(GitSource::parse(s).map_err(CopyError::from)?),
            None => locals.push(s.clone()),
        }
    }
    let checksum = match &c.checksum {
        None => None,
        Some(sum) => {
            let sum = st.expand(sum)?;
            if urls.len() != 1 || !locals.is_empty() || !gits.is_empty() || !c.contents.is_empty() {
                return Err(CopyError::ChecksumSources);
            }
            Some(parse_checksum(&sum).map_err(RemoteError::from)?)
        }
    };
    let chmod = match &c.chmod {
        Some(m) => Some(copy::parse_chmod(&st.expand(m)?)?),
        None => None,
    };
    let lexer = crate::planner::expand::Lexer::new(st.escape).skip_process_quotes(true);
    let env = st.expansion_env();
    let contents = c
        .contents
        .iter()
        .map(|h| {
            let data = if h.expand {
                lexer.process_word(&h.data, &env)?
            } else {
                h.data.clone()
            };
            Ok((h.path.clone(), data.into_bytes()))
        })
        .collect::<Result<_, CopyError>>()?;
    Ok(CopyWords {
        dest: absolute_dest(cur, &st.expand(&c.dest)?),
        chown: c.chown.as_ref().map(|o| st.expand(o)).transpose()?,
        exclude: c
            .exclude
            .iter()
            .map(|e| st.expand(e))
            .collect::<Result<Vec<_>, _>>()?,
        sources,
        urls,
        gits,
        locals,
        checksum,
        chmod,
        contents,
    })
}

/// A destination relative to the WORKDIR made absolute, keeping a trailing `/` (`.` too).
fn absolute_dest(cur: &StageResult, dest_word: &str) -> String {
    if dest_word.starts_with('/') {
        return dest_word.to_string();
    }
    let wd = &cur.state.spec.config.working_dir;
    let workdir = if wd.is_empty() { "/" } else { wd.as_str() };
    let slash = if dest_word.ends_with('/') || dest_word == "." {
        "/"
    } else {
        ""
    };
    format!(
        "{}{slash}",
        super::meta::clean_abs(&format!("{workdir}/{dest_word}"))
    )
}

/// The key of a COPY before its sources: the parent, the instruction and its flags.
fn copy_key(cur: &StageResult, op: &Op, c: &CopyOp, w: &CopyWords) -> KeyBuilder {
    let chmod_key = w.chmod.as_ref().map(Chmod::key);
    let mut key = KeyBuilder::new("copy");
    key.text("semantics", COPY_SEMANTICS)
        .text("parent", cur.key.as_str())
        .text("instruction", &op.code)
        .list("sources", &w.sources)
        .text("dest", &w.dest)
        .opt("chown", w.chown.as_deref())
        .opt("chmod", chmod_key.as_deref())
        .list("exclude", &w.exclude)
        .text("parents", if c.parents { "1" } else { "0" });
    for (name, data) in &w.contents {
        key.text("heredoc", name).field("heredoc-data", data);
    }
    key
}

/// Everything the copy writes, gathered before the overlay is mounted.
struct CopyPlan {
    opts: CopyOptions,
    chown: Option<String>,
    ctx_srcs: Vec<copy::Source>,
    stage_paths: Vec<String>,
    /// Git checkouts: the subdirectory to copy and the checkout's directory.
    checkouts: Vec<(String, PathBuf)>,
    dest: String,
    contents: Vec<(String, Vec<u8>)>,
    /// Downloaded files (URL, file, Last-Modified), kept by the caller until the layer is
    /// written (a direct write reads them after the overlay is gone).
    downloads: Vec<(String, PathBuf, Option<i64>)>,
    many_sources: bool,
    archives: Vec<ContextFile>,
    clamp: Option<i64>,
}

/// The copy, on the mounted overlay `merged` (source stages mounted at `roots`): the items
/// planned, then written (or left to [`direct::write`] when that can do it).
fn write_copy(
    plan: CopyPlan,
    merged: &Path,
    roots: &[PathBuf],
    lowers: &[PathBuf],
) -> Result<Option<DirectWrite>, CopyError> {
    let mut opts = plan.opts;
    if let Some(c) = &plan.chown {
        opts.chown = Some(lookup::resolve_owner(merged, c).map_err(WriteError::Owner)?);
    }
    let mut srcs = plan.ctx_srcs;
    for p in &plan.stage_paths {
        let root = roots.first().ok_or(WriteError::NotMounted)?;
        srcs.push(stage_source(root, p)?);
    }
    for (subdir, dir) in &plan.checkouts {
        srcs.push(stage_source(dir, subdir)?);
    }
    // A symlink at the destination is written through, as BuildKit does: the destination
    // becomes the path it resolves to inside the image (a dangling link's target included),
    // never a host path.
    let dest = &resolve_dest(merged, &plan.dest)?;
    let probe = |p: &str| {
        if lookup::is_dir_in_root(merged, p) {
            copy::Existing::Dir
        } else if lookup::exists_in_root(merged, p) {
            copy::Existing::Other
        } else {
            copy::Existing::Nothing
        }
    };
    let mut items = copy::plan(&srcs, dest, &probe, &opts)?;
    let dest_rel = super::meta::clean_abs(dest)
        .trim_start_matches('/')
        .to_string();
    let into_dir = dest.ends_with('/') || lookup::is_dir_in_root(merged, &dest_rel);
    let mtime = plan.clamp.unwrap_or(0);
    items.extend(heredoc_items(
        &plan.contents,
        &dest_rel,
        into_dir,
        &opts,
        mtime,
    ));
    if !plan.downloads.is_empty() && plan.many_sources && !into_dir {
        return Err(CopyError::AddDestNotDir);
    }
    items.extend(download_items(
        &plan.downloads,
        &dest_rel,
        into_dir,
        &opts,
        plan.clamp,
    )?);
    // The directories the copy creates above what it copies are the --chown user's and,
    // with an octal --chmod, of that mode (fsutil's MkdirAll); otherwise the extractor
    // makes them 0755 and root's, as BuildKit does.
    let dir_mode = Chmod::created_dir_mode(opts.chmod.as_ref());
    if opts.chown.is_some() || dir_mode != 0o755 {
        let exists = |p: &str| lookup::exists_in_root(merged, p);
        let owner = opts.chown.unwrap_or((0, 0));
        let parents = copy::missing_parents(&items, &exists, owner, dir_mode, mtime);
        items.splice(0..0, parents);
    }
    // Written after the overlay is unmounted: only sources that stay readable then (not a
    // stage's or an image's files, which are read through their own mounts).
    if plan.archives.is_empty() && roots.is_empty() {
        if let Some(direct) = direct::plan(&items, merged, lowers) {
            return Ok(Some(direct));
        }
    }
    extract_items(&items, merged)?;
    for a in &plan.archives {
        unpack_local_archive(a, merged, &dest_rel, opts.chown)?;
    }
    Ok(None)
}

/// The heredoc sources as files: 0644 (or `--chmod`), the `--chown` owner.
fn heredoc_items(
    contents: &[(String, Vec<u8>)],
    dest_rel: &str,
    into_dir: bool,
    opts: &CopyOptions,
    mtime: i64,
) -> Vec<Item> {
    contents
        .iter()
        .map(|(name, data)| Item {
            name: if into_dir {
                format!("{dest_rel}/{name}")
                    .trim_start_matches('/')
                    .to_string()
            } else {
                dest_rel.to_string()
            },
            kind: ItemKind::Data(data.clone()),
            mode: opts.chmod.as_ref().map_or(0o644, |c| c.apply(0o644, false)),
            uid: opts.chown.map_or(0, |o| o.0),
            gid: opts.chown.map_or(0, |o| o.1),
            mtime,
        })
        .collect()
}

/// The downloaded files: Docker gives each mode 0600 and the server's Last-Modified time.
fn download_items(
    downloads: &[(String, PathBuf, Option<i64>)],
    dest_rel: &str,
    into_dir: bool,
    opts: &CopyOptions,
    clamp: Option<i64>,
) -> Result<Vec<Item>, CopyError> {
    let mut items = Vec::new();
    for (url, file, last_modified) in downloads {
        let name = if into_dir {
            let file =
                remote::url_file_name(url).ok_or_else(|| CopyError::UrlNoFileName(url.clone()))?;
            format!("{dest_rel}/{file}")
                .trim_start_matches('/')
                .to_string()
        } else {
            dest_rel.to_string()
        };
        let mtime = match (*last_modified, clamp) {
            (Some(m), Some(c)) => m.min(c),
            (Some(m), None) => m,
            (None, c) => c.unwrap_or(0),
        };
        items.push(Item {
            name,
            kind: ItemKind::File(file.clone()),
            mode: opts.chmod.as_ref().map_or(0o600, |c| c.apply(0o600, false)),
            uid: opts.chown.map_or(0, |o| o.0),
            gid: opts.chown.map_or(0, |o| o.1),
            mtime,
        });
    }
    Ok(items)
}

/// Why the copy cannot be written into the image root.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// `--chown` (or the USER of WORKDIR) names no user or group of the image.
    #[error(transparent)]
    Owner(lookup::OwnerError),
    /// A path cannot be resolved or read (`/path: …`).
    #[error("{path}: {source}")]
    Path {
        /// The path, as the message shows it.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A `--from` source resolves outside its stage.
    #[error("{0}: resolves outside the source stage")]
    Outside(String),
    /// A `--from` source the stage does not have.
    #[error("{0}: not found in the source stage")]
    NotFound(String),
    /// The source stage's overlay was not mounted.
    #[error("the source stage was not mounted")]
    NotMounted,
    /// The tar stream between the copy's writer and the extractor failed.
    #[error(transparent)]
    Stream(io::Error),
    /// The copy's writer thread panicked.
    #[error("the copy writer panicked")]
    WriterPanicked,
    /// The extractor refused or failed.
    #[error(transparent)]
    Extract(#[from] crate::archive::ArchiveError),
    /// A local archive cannot be read or unpacked.
    #[error("{}: {source}", path.display())]
    Archive {
        /// The archive in the context.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn at_path(path: impl Into<String>) -> impl FnOnce(io::Error) -> WriteError {
    let path = path.into();
    move |source| WriteError::Path { path, source }
}

/// Write items into the merged root through the hardened extractor, streaming the tar.
pub(crate) fn extract_items(items: &[Item], merged: &Path) -> Result<(), WriteError> {
    let (reader, writer) = io::pipe().map_err(WriteError::Stream)?;
    std::thread::scope(|s| {
        let w = s.spawn(move || copy::write_tar(items, writer).map(drop));
        let r = archive::extract(
            BufReader::new(reader),
            merged,
            // A context file literally named `.wh.x` must not delete anything in the image.
            &ExtractOptions {
                whiteouts: crate::archive::WhiteoutMode::Refuse,
                ..Default::default()
            },
        );
        let wr = w.join().map_err(|_| WriteError::WriterPanicked)?;
        r?;
        wr.map_err(WriteError::Stream)
    })
}

/// A `COPY --from` source in a stage's root. A source that is itself a symlink is followed
/// (inside the root) and copied under the link's name, as both of Docker's builders do;
/// symlinks below a source directory stay symlinks.
fn stage_source(root: &Path, path: &str) -> Result<copy::Source, WriteError> {
    let (dir, name) = real_path_in_root(root, path)?;
    let is_link = !name.is_empty()
        && std::fs::symlink_metadata(dir.join(&name)).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        return copy::tree_source(&dir, &name).map_err(at_path(path));
    }
    let fd = lookup::open_in_root(root, path, libc::O_PATH)
        .map_err(at_path(format!("/{}", path.trim_start_matches('/'))))?;
    use std::os::fd::AsRawFd;
    let real =
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(at_path(path))?;
    let (tdir, tname) = match (real.strip_prefix(root), real.parent(), real.file_name()) {
        (Ok(r), _, _) if r.as_os_str().is_empty() => (root.to_path_buf(), String::new()),
        (Ok(_), Some(parent), Some(file)) => {
            (parent.to_path_buf(), file.to_string_lossy().into_owned())
        }
        _ => return Err(WriteError::Outside(path.to_string())),
    };
    Ok(copy::tree_source(&tdir, &tname)
        .map_err(at_path(path))?
        .renamed(&name))
}

/// Resolve `path` inside `root` (symlinks followed inside it, the last component kept as
/// is) to a host directory and a name below it that contains no symlink.
fn real_path_in_root(root: &Path, path: &str) -> Result<(PathBuf, String), WriteError> {
    let path = path.trim_start_matches('/');
    let (parent, name) = match path.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", path),
    };
    let shown = format!("/{path}");
    let fd = lookup::open_in_root(root, parent, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(at_path(shown.clone()))?;
    use std::os::fd::AsRawFd;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(at_path(shown.clone()))?;
    if !real.starts_with(root) {
        return Err(WriteError::Outside(shown));
    }
    if name.is_empty() {
        // The stage root itself.
        return Ok((real, String::new()));
    }
    if std::fs::symlink_metadata(real.join(name)).is_err() {
        return Err(WriteError::NotFound(shown));
    }
    Ok((real, name.to_string()))
}

/// A local file ADD unpacks: a tar, plain or compressed with gzip, bzip2, xz or zstd,
/// decided by content as BuildKit does ([`archive::is_tar_stream`]).
fn is_local_archive(file: &ContextFile) -> bool {
    file.open().is_ok_and(archive::is_tar_stream)
}

/// Unpacks the local archive `a` into `dest` of the image root `merged` (resolved inside
/// it), with every entry owned by `owner` when given (`ADD --chown`).
fn unpack_local_archive(
    a: &ContextFile,
    merged: &Path,
    dest: &str,
    owner: Option<(u32, u32)>,
) -> Result<(), WriteError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| WriteError::Archive {
        path: a.host().to_path_buf(),
        source,
    };
    let f = a.open().map_err(|e| failed(Box::new(e)))?;
    // The destination is resolved inside the image: a symlink there (`/y -> /host/dir`)
    // leads to the image's own `/host/dir`, never the host's.
    archive::extract_under(
        BufReader::new(f),
        merged,
        dest,
        &ExtractOptions {
            owner,
            bzip2_xz: true,
            ..Default::default()
        },
    )
    .map(drop)
    .map_err(|e| failed(Box::new(e)))
}

/// A COPY destination with its symlinks followed inside the image root `merged` (see
/// [`lookup::resolve_in_root`]), absolute, keeping a trailing `/` (`/.` becomes `/`).
fn resolve_dest(merged: &Path, dest: &str) -> Result<String, WriteError> {
    let trailing = dest.ends_with('/') || dest.ends_with("/.");
    let resolved =
        lookup::resolve_in_root(merged, &super::meta::clean_abs(dest)).map_err(at_path(dest))?;
    Ok(if trailing && !resolved.is_empty() {
        format!("/{resolved}/")
    } else {
        format!("/{resolved}")
    })
}
