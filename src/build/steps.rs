//! The filesystem steps of a stage: COPY, ADD and WORKDIR's directory, each keyed for the
//! cache, answered from it when possible, and otherwise written through the overlay view.

use std::collections::BTreeMap;
use std::io::{self, BufReader};

use sha2::{Digest as _, Sha256};

use crate::archive::{self, ExtractOptions};
use crate::cache::{CacheRecord, KeyBuilder, CACHE_VERSION};
use crate::context::select::{confine, select};
use crate::context::{self, Context, StatCache};
use crate::image::spec::{History, ImageSpec};
use crate::image::Digest;
use crate::parser::instructions::SourceContent;
use crate::parser::shell::Lexer;
use crate::parser::Location;
use crate::planner::{resolve_source, Source as PlanSource};

use super::copy::{self, CopyOptions, Item, ItemKind};
use super::fs::{change, FsError};
use super::rootfs;
use super::{BuildError, BuildEvent, Builder, StageResult, HISTORY_COMMENT};

/// COPY and ADD, after the parser: what the step must do.
pub(crate) struct CopySpec<'a> {
    pub sources: &'a [String],
    pub contents: &'a [SourceContent],
    pub dest: &'a str,
    pub from: Option<&'a str>,
    pub chown: Option<&'a str>,
    pub chmod: Option<&'a str>,
    pub exclude: &'a [String],
    pub parents: bool,
    /// ADD: unpack local archives.
    pub unpack: bool,
    pub location: Location,
    pub code: &'a str,
}

fn step_err(location: Location) -> impl Fn(String) -> BuildError {
    move |message| BuildError::Step { message, location }
}

fn fs_err(location: Location) -> impl Fn(FsError) -> BuildError {
    move |e| BuildError::Step {
        message: e.to_string(),
        location,
    }
}

/// Where a COPY's files come from.
enum From {
    Context(Vec<String>),
    Stage(usize, Vec<String>),
    Image(Vec<crate::cache::LayerRef>, Vec<String>),
}

impl Builder<'_> {
    /// The build context, scanned on first use, with its stat cache.
    fn context(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, Option<(Context, StatCache)>>, BuildError> {
        let mut guard = self.context.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let ctx = Context::scan(&self.req.context_dir, &self.req.ignore).map_err(|e| {
                BuildError::Step {
                    message: e.to_string(),
                    location: Location::default(),
                }
            })?;
            let abs = std::fs::canonicalize(&self.req.context_dir)
                .unwrap_or_else(|_| self.req.context_dir.clone());
            let name = context::hex(&Sha256::digest(abs.as_os_str().as_encoded_bytes()).into());
            let cache = StatCache::load(
                &self
                    .store
                    .root()
                    .join("contexts")
                    .join(format!("{name}.statcache-v1")),
            );
            *guard = Some((ctx, cache));
        }
        Ok(guard)
    }

    /// Write the stat cache back (called once at the end of a build).
    pub(crate) fn save_statcache(&self) {
        let mut guard = self.context.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = guard.as_mut() {
            if let Err(e) = c.save() {
                tracing::warn!(error = %e, "cannot save the build context's stat cache");
            }
        }
    }

    /// Record the step's inputs, then look its key up unless `--no-cache`: on a hit take
    /// its state (and say CACHED), on a miss say why.
    fn lookup(
        &self,
        id: Option<usize>,
        position: &str,
        key: &Digest,
        mut inputs: BTreeMap<String, String>,
        cur: &mut StageResult,
    ) -> bool {
        use crate::cache::explain::{compare, explain, StepInputs};
        inputs.insert("base".into(), cur.base.clone());
        inputs.insert("parent".into(), cur.key.to_string());
        let ids = self.key_ids.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = ids.get(cur.key.as_str()) {
            inputs.insert("parent-step".into(), n.to_string());
        }
        drop(ids);
        let step = StepInputs {
            position: position.to_string(),
            key: key.to_string(),
            inputs,
        };
        let prev = self.previous.as_ref().and_then(|p| p.step(position));
        if let Some(id) = id {
            self.key_ids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.to_string(), id);
            if self.req.explain {
                self.progress.event(BuildEvent::Explain {
                    id,
                    lines: compare(prev, &step),
                });
            }
        }
        let hit = !self.req.no_cache
            && match self.cache.get(key) {
                Some(rec) => match serde_json::from_value::<ImageSpec>(rec.config) {
                    Ok(spec) => {
                        cur.state.spec = spec;
                        cur.state.layers = rec.layers;
                        true
                    }
                    Err(_) => false,
                },
                None => false,
            };
        if let Some(id) = id {
            if hit {
                self.progress.event(BuildEvent::Cached { id });
            } else {
                let reason = if self.req.no_cache {
                    "--no-cache".to_string()
                } else {
                    explain(prev, &step)
                };
                self.progress.event(BuildEvent::Miss { id, reason });
            }
        }
        self.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .steps
            .push(step);
        hit
    }

    /// Save this build's step inputs for the next build's miss reasons.
    pub(crate) fn save_record(&self, path: &std::path::Path) {
        let mut rec = self
            .record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        rec.version = crate::cache::explain::RECORD_VERSION;
        rec.steps.sort_by(|a, b| a.position.cmp(&b.position));
        let Some(dir) = path.parent() else { return };
        let ok = std::fs::create_dir_all(dir).is_ok()
            && serde_json::to_vec(&rec).is_ok_and(|bytes| {
                crate::store::fsutil::write_atomic(dir, path, &bytes, 0o600).is_ok()
            });
        if !ok {
            tracing::warn!(path = %path.display(), "cannot save the build record");
        }
    }

    fn remember(&self, key: &Digest, cur: &StageResult, inputs: BTreeMap<String, String>) {
        let rec = CacheRecord {
            version: CACHE_VERSION,
            key: key.clone(),
            layers: cur.state.layers.clone(),
            config: serde_json::to_value(&cur.state.spec).unwrap_or_default(),
            inputs,
        };
        if let Err(e) = self.cache.put(&rec) {
            tracing::warn!(error = %e, "cannot record a cache entry");
        }
    }

    /// Record a finished filesystem step in the history.
    fn history(&self, cur: &mut StageResult, created_by: String, layer: bool) {
        cur.history.push(History {
            created: Some(self.created.clone()),
            created_by: Some(created_by),
            comment: Some(HISTORY_COMMENT.to_string()),
            empty_layer: !layer,
            ..Default::default()
        });
    }

    /// COPY or ADD.
    pub(crate) fn copy_step(
        &self,
        id: usize,
        cur: &mut StageResult,
        spec: CopySpec<'_>,
        stages: &BTreeMap<usize, StageResult>,
        position: &str,
    ) -> Result<(), BuildError> {
        let err = step_err(spec.location);
        let st = &cur.state;
        let sources = spec
            .sources
            .iter()
            .map(|s| st.expand(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(&err)?;
        if let Some(url) = sources.iter().find(|s| {
            s.starts_with("http://") || s.starts_with("https://") || s.starts_with("git@")
        }) {
            return Err(err(format!(
                "{url}: adding remote URLs and git repositories is not supported yet; download it in a RUN step or into the build context"
            )));
        }
        let dest_word = st.expand(spec.dest).map_err(&err)?;
        let workdir = if st.spec.config.working_dir.is_empty() {
            "/".to_string()
        } else {
            st.spec.config.working_dir.clone()
        };
        let dest = if dest_word.starts_with('/') {
            dest_word.clone()
        } else {
            let slash = if dest_word.ends_with('/') || dest_word == "." {
                "/"
            } else {
                ""
            };
            format!(
                "{}{slash}",
                super::meta::clean_abs(&format!("{workdir}/{dest_word}"))
            )
        };
        let chown = spec.chown.map(|c| st.expand(c)).transpose().map_err(&err)?;
        let chmod = spec
            .chmod
            .map(|c| {
                st.expand(c)
                    .and_then(|c| copy::parse_chmod(&c).map_err(|e| e.to_string()))
            })
            .transpose()
            .map_err(&err)?;
        let exclude = spec
            .exclude
            .iter()
            .map(|e| st.expand(e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(&err)?;
        let lexer = Lexer::new(st.escape).skip_process_quotes(true);
        let env = st.expansion_env();
        let contents: Vec<(String, Vec<u8>)> = spec
            .contents
            .iter()
            .map(|c| {
                let data = if c.expand {
                    lexer
                        .process_word(&c.data, &env)
                        .map_err(|e| e.to_string())?
                } else {
                    c.data.clone()
                };
                Ok((c.path.clone(), data.into_bytes()))
            })
            .collect::<Result<_, String>>()
            .map_err(&err)?;

        let mut key = KeyBuilder::new("copy");
        key.text("parent", cur.key.as_str())
            .text("instruction", spec.code)
            .list("sources", &sources)
            .text("dest", &dest)
            .opt("chown", chown.as_deref())
            .opt("chmod", chmod.map(|m| format!("{m:o}")).as_deref())
            .list("exclude", &exclude)
            .text("parents", if spec.parents { "1" } else { "0" });
        for (name, data) in &contents {
            key.text("heredoc", name).field("heredoc-data", data);
        }
        let mut inputs = BTreeMap::new();
        let from = match spec.from {
            None => {
                let mut guard = self.context()?;
                let (ctx, cache) = guard.as_mut().expect("scanned by context()");
                let mut paths = Vec::new();
                for s in &sources {
                    paths.extend(select(ctx, s).map_err(|e| err(e.to_string()))?);
                }
                let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
                ctx.hash_contents(&refs, cache)
                    .map_err(|e| err(e.to_string()))?;
                for p in &paths {
                    let h = ctx
                        .tree_hash(p)
                        .ok_or_else(|| err(format!("{p}: changed while it was read")))?;
                    key.text("source", p).field("tree", &h);
                    for (k, e) in ctx.subtree(p) {
                        let what = match (e.kind, ctx.content_hash(k)) {
                            (context::Kind::File, Some(h)) => context::hex(h),
                            (context::Kind::Symlink, _) => {
                                format!("-> {}", e.link_target.as_deref().unwrap_or(""))
                            }
                            _ => "dir".to_string(),
                        };
                        inputs.insert(
                            format!("file:{k}"),
                            format!("{:o}:{}:{}:{what}", e.mode & 0o7777, e.uid, e.gid),
                        );
                    }
                }
                From::Context(paths)
            }
            Some(f) => {
                let value = st.expand(f).map_err(&err)?;
                let names: Vec<Option<String>> =
                    self.plan.stages.iter().map(|s| s.name.clone()).collect();
                match resolve_source(&value, &names, spec.location)
                    .map_err(|e| err(e.to_string()))?
                {
                    PlanSource::Stage(i) => {
                        let src = stages.get(&i).ok_or_else(|| {
                            err(format!("stage {value} is not built before it is used"))
                        })?;
                        key.text("from-stage", src.key.as_str());
                        From::Stage(i, sources.iter().map(|s| confine(s)).collect())
                    }
                    PlanSource::Image(name) => {
                        let rec = self.store.resolve(&name).map_err(|_| {
                            err(format!(
                                "{name}: image not found in the local store (kiln does not pull yet; import or load it first)"
                            ))
                        })?;
                        key.text("from-image", rec.manifest_digest.as_str());
                        let layers = rec
                            .manifest
                            .layers()
                            .iter()
                            .zip(&rec.diff_ids)
                            .map(|(l, d)| crate::cache::LayerRef {
                                diff_id: d.clone(),
                                size: l.size(),
                            })
                            .collect();
                        From::Image(layers, sources.iter().map(|s| confine(s)).collect())
                    }
                }
            }
        };
        let key = key.finish();
        inputs.insert("instruction".into(), spec.code.to_string());
        for (k, v) in cur.state.arg_values() {
            if spec.code.contains(&k) {
                inputs.insert(format!("arg:{k}"), v);
            }
        }
        if self.lookup(Some(id), position, &key, inputs.clone(), cur) {
            self.history(cur, format!("{} # kiln", spec.code), true);
            cur.key = key;
            return Ok(());
        }

        let keep_owner = !matches!(from, From::Context(..));
        let opts = CopyOptions {
            chown: None,
            chmod,
            parents: spec.parents,
            exclude,
            keep_owner,
        };
        let (source_layers, stage_paths) = match &from {
            From::Stage(i, paths) => (vec![stages[i].state.layers.clone()], paths.clone()),
            From::Image(layers, paths) => (vec![layers.clone()], paths.clone()),
            From::Context(_) => (Vec::new(), Vec::new()),
        };
        // Context sources are listed now, so the copy itself does not hold the context.
        let unpack = spec.unpack;
        let mut ctx_srcs = Vec::new();
        let mut archives = Vec::new();
        if let From::Context(paths) = &from {
            let guard = self.context()?;
            let (ctx, _) = guard.as_ref().expect("scanned by context()");
            for p in paths {
                if unpack && is_local_archive(&ctx.root().join(p)) {
                    archives.push(ctx.root().join(p));
                } else {
                    ctx_srcs.push(copy::context_source(ctx, p));
                }
            }
        }
        let clamp = self.req.source_date_epoch;
        let work = |merged: &std::path::Path, roots: &[std::path::PathBuf]| -> Result<(), String> {
            let mut opts = opts;
            if let Some(c) = &chown {
                opts.chown = Some(rootfs::resolve_owner(merged, c)?);
            }
            let mut srcs = ctx_srcs;
            for p in &stage_paths {
                let root = roots.first().ok_or("the source stage was not mounted")?;
                let real = real_path_in_root(root, p)?;
                srcs.push(copy::tree_source(&real.0, &real.1).map_err(|e| format!("{p}: {e}"))?);
            }
            let is_dir = |p: &str| rootfs::is_dir_in_root(merged, p);
            let mut items = copy::plan(&srcs, &dest, &is_dir, &opts).map_err(|e| e.to_string())?;
            let dest_rel = super::meta::clean_abs(&dest)
                .trim_start_matches('/')
                .to_string();
            for (name, data) in &contents {
                items.push(Item {
                    name: if dest.ends_with('/') || is_dir(&dest_rel) {
                        format!("{dest_rel}/{name}")
                            .trim_start_matches('/')
                            .to_string()
                    } else {
                        dest_rel.clone()
                    },
                    kind: ItemKind::Data(data.clone()),
                    mode: opts.chmod.unwrap_or(0o644),
                    uid: opts.chown.map_or(0, |o| o.0),
                    gid: opts.chown.map_or(0, |o| o.1),
                    mtime: clamp.unwrap_or(0),
                });
            }
            extract_items(&items, merged)?;
            for a in &archives {
                let target = dest_rel.clone();
                let dir = merged.join(&target);
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                let f = std::fs::File::open(a).map_err(|e| format!("{}: {e}", a.display()))?;
                archive::extract(BufReader::new(f), &dir, &ExtractOptions::default())
                    .map_err(|e| format!("{}: {e}", a.display()))?;
            }
            Ok(())
        };
        let (result, layer) = change(self.store, &cur.state.layers, &source_layers, clamp, work)
            .map_err(fs_err(spec.location))?;
        result.map_err(&err)?;
        if let Some(l) = &layer {
            cur.state.layers.push(l.clone());
        }
        self.history(cur, format!("{} # kiln", spec.code), layer.is_some());
        cur.key = key.clone();
        self.remember(&key, cur, inputs);
        Ok(())
    }

    /// WORKDIR creates its directory when the image lacks it (a layer only then).
    pub(crate) fn workdir_step(
        &self,
        cur: &mut StageResult,
        location: Location,
        position: &str,
    ) -> Result<(), BuildError> {
        let wd = cur.state.spec.config.working_dir.clone();
        let mut key = KeyBuilder::new("workdir");
        key.text("parent", cur.key.as_str()).text("dir", &wd);
        let key = key.finish();
        let inputs = BTreeMap::from([("workdir".to_string(), wd.clone())]);
        if self.lookup(None, position, &key, inputs, cur) {
            cur.key = key;
            return Ok(());
        }
        let wd2 = wd.clone();
        let (r, layer) = change(
            self.store,
            &cur.state.layers,
            &[],
            self.req.source_date_epoch,
            move |merged, _| {
                if rootfs::is_dir_in_root(merged, &wd2) {
                    return Ok(());
                }
                let item = Item {
                    name: wd2.trim_start_matches('/').to_string(),
                    kind: ItemKind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                };
                extract_items(&[item], merged)
            },
        )
        .map_err(fs_err(location))?;
        r.map_err(step_err(location))?;
        if let Some(l) = layer {
            cur.state.layers.push(l);
        }
        cur.key = key.clone();
        self.remember(&key, cur, BTreeMap::new());
        Ok(())
    }
}

/// Write items into the merged root through the hardened extractor, streaming the tar.
fn extract_items(items: &[Item], merged: &std::path::Path) -> Result<(), String> {
    let (reader, writer) = io::pipe().map_err(|e| e.to_string())?;
    std::thread::scope(|s| {
        let w = s.spawn(move || copy::write_tar(items, writer).map(drop));
        let r = archive::extract(
            BufReader::new(reader),
            merged,
            // A context file literally named `.wh.x` must not delete anything in the image.
            &ExtractOptions {
                apply_whiteouts: false,
                ..Default::default()
            },
        );
        let wr = w
            .join()
            .map_err(|_| "the copy writer panicked".to_string())?;
        r.map_err(|e| e.to_string())?;
        wr.map_err(|e| e.to_string())
    })
}

/// Resolve `path` inside `root` (symlinks followed inside it, the last component kept as
/// is) to a host directory and a name below it that contains no symlink.
fn real_path_in_root(
    root: &std::path::Path,
    path: &str,
) -> Result<(std::path::PathBuf, String), String> {
    let path = path.trim_start_matches('/');
    let (parent, name) = match path.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", path),
    };
    let fd = rootfs::open_in_root(root, parent, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| format!("/{path}: {e}"))?;
    use std::os::fd::AsRawFd;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| format!("/{path}: {e}"))?;
    if !real.starts_with(root) {
        return Err(format!("/{path}: resolves outside the source stage"));
    }
    if name.is_empty() {
        // The stage root itself.
        return Ok((real, String::new()));
    }
    if std::fs::symlink_metadata(real.join(name)).is_err() {
        return Err(format!("/{path}: not found in the source stage"));
    }
    Ok((real, name.to_string()))
}

/// A local file ADD unpacks: tar, possibly gzip/zstd-compressed (checked by magic bytes).
fn is_local_archive(p: &std::path::Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(p) else {
        return false;
    };
    if !f.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return false;
    }
    let mut head = [0u8; 512];
    let n = f.read(&mut head).unwrap_or(0);
    let h = &head[..n];
    h.starts_with(&[0x1f, 0x8b])
        || h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (n >= 262 && &h[257..262] == b"ustar")
}

impl Builder<'_> {
    /// RUN: the command in a sandbox over the stage's layers; what it changed is a layer.
    pub(crate) fn run_step(
        &self,
        id: usize,
        cur: &mut StageResult,
        r: &crate::parser::instructions::Run,
        position: &str,
    ) -> Result<(), BuildError> {
        use crate::executor::{self, ExitStatus, Output, RwLayer, StepIo, StepSpec};
        use crate::parser::instructions::ShellOrExec;
        use crate::parser::runflags::NetworkMode as RunNetwork;

        let err = step_err(r.location);
        if !r.mounts.is_empty() {
            return Err(err(
                "RUN --mount is not supported yet; copy what the step needs with COPY".to_string(),
            ));
        }
        let shell = cur.state.shell();
        let argv: Vec<String> = match &r.cmd {
            ShellOrExec::Exec(v) => v.clone(),
            ShellOrExec::Shell(line) => {
                let script = match r.files.as_slice() {
                    [] => line.clone(),
                    // `RUN <<EOF` alone: the body is the script (BuildKit does the same for
                    // shells without heredoc support).
                    [only]
                        if crate::parser::heredoc::parse_word(line.trim())
                            .ok()
                            .flatten()
                            .is_some() =>
                    {
                        only.data.clone()
                    }
                    // Otherwise the shell reads the heredocs itself.
                    files => {
                        let mut s = line.clone();
                        for f in files {
                            s.push('\n');
                            s.push_str(&f.data);
                            s.push_str(&f.name);
                        }
                        s
                    }
                };
                shell
                    .iter()
                    .cloned()
                    .chain(std::iter::once(script))
                    .collect()
            }
        };
        if argv.is_empty() {
            return Err(err("RUN needs a command".to_string()));
        }
        let env = cur.state.run_env();
        let user = cur.state.spec.config.user.clone();
        let workdir = if cur.state.spec.config.working_dir.is_empty() {
            "/".to_string()
        } else {
            cur.state.spec.config.working_dir.clone()
        };
        let network_none = match r.network {
            RunNetwork::None => true,
            RunNetwork::Host => false,
            _ => self.req.network_none,
        };
        let mut key = KeyBuilder::new("run");
        key.text("parent", cur.key.as_str())
            .list("argv", &argv)
            .list("env", &env)
            .text("user", &user)
            .text("workdir", &workdir)
            .text("network", if network_none { "none" } else { "host" });
        let key = key.finish();
        let created_by = format!("RUN {} # kiln", argv.join(" "));
        let mut inputs = BTreeMap::new();
        inputs.insert("instruction".to_string(), r.code.clone());
        for (k, v) in cur.state.arg_values() {
            inputs.insert(format!("arg:{k}"), v);
        }
        for e in &cur.state.spec.config.env {
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            inputs.insert(format!("env:{k}"), v.to_string());
        }
        inputs.insert("user".to_string(), user.clone());
        inputs.insert("workdir".to_string(), workdir.clone());
        inputs.insert(
            "network".to_string(),
            if network_none { "none" } else { "host" }.to_string(),
        );
        if self.lookup(Some(id), position, &key, inputs, cur) {
            self.history(cur, created_by, true);
            cur.key = key;
            return Ok(());
        }

        let fse = fs_err(r.location);
        let lowers = super::fs::lower_dirs(self.store, &cur.state.layers).map_err(&fse)?;
        let res = self
            .store
            .reserve_snapshot()
            .map_err(|e| err(e.to_string()))?;
        let scratch = super::fs::scratch_dir(self.store).map_err(&fse)?;
        let work = scratch.path().join("work");
        std::fs::create_dir(&work).map_err(|e| err(e.to_string()))?;
        let mut spec = StepSpec::new(lowers, scratch.path(), argv.clone());
        spec.rw = RwLayer::Dirs {
            upper: res.path(),
            work,
        };
        spec.env = env;
        spec.workdir = workdir;
        spec.user = user;
        spec.network = if network_none {
            executor::NetworkMode::None
        } else {
            executor::NetworkMode::Host
        };
        spec.cancel = self.cancel.clone();
        let progress = self.progress;
        let mut out = |line: &[u8]| {
            progress.event(BuildEvent::Output {
                id,
                text: String::from_utf8_lossy(line).into_owned(),
            })
        };
        let mut errs = |line: &[u8]| {
            progress.event(BuildEvent::Output {
                id,
                text: String::from_utf8_lossy(line).into_owned(),
            })
        };
        let outcome = executor::run_step(
            &spec,
            StepIo {
                stdin: Default::default(),
                stdout: Output::Lines(&mut out),
                stderr: Output::Lines(&mut errs),
            },
        )
        .map_err(|e| err(e.to_string()))?;
        let _ = executor::remove_step_dir(&outcome.step_dir);
        let shown = serde_json::to_string(&argv).unwrap_or_default();
        match outcome.status {
            ExitStatus::Code(0) => {}
            ExitStatus::Code(c) => {
                return Err(BuildError::RunFailed {
                    message: format!(
                        "process {shown} did not complete successfully: exit code: {c}"
                    ),
                    location: r.location,
                    code: c,
                })
            }
            ExitStatus::Signal(s) => {
                return Err(BuildError::RunFailed {
                    message: format!(
                        "process {shown} did not complete successfully: killed by signal {s}"
                    ),
                    location: r.location,
                    code: 128 + s,
                })
            }
        }
        let upper = res.path();
        let changed = std::fs::read_dir(&upper)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if changed {
            let layer = super::fs::commit_dir(self.store, &upper, self.req.source_date_epoch)
                .map_err(&fse)?;
            res.commit(
                super::fs::top_chain(&cur.state.layers).as_ref(),
                &layer.diff_id,
            )
            .map_err(|e| err(e.to_string()))?;
            cur.state.layers.push(layer);
        }
        drop(scratch);
        self.history(cur, created_by, changed);
        cur.key = key.clone();
        self.remember(&key, cur, BTreeMap::new());
        Ok(())
    }
}
