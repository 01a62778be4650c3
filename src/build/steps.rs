//! The filesystem steps of a stage: COPY, ADD and WORKDIR's directory, each keyed for the
//! cache, answered from it when possible, and otherwise written through the overlay view.

use std::collections::BTreeMap;
use std::io::{self, BufReader};

use sha2::{Digest as _, Sha256};

use crate::archive::{self, ExtractOptions};
use crate::cache::{CacheRecord, KeyBuilder, CACHE_VERSION};
use crate::context::select::{confine, select, Selected};
use crate::context::{self, Context, StatCache};
use crate::image::spec::History;
use crate::image::Digest;
use crate::parser::instructions::SourceContent;
use crate::parser::shell::Lexer;
use crate::parser::Location;
use crate::planner::{resolve_source, Source as PlanSource};

use super::direct;
use super::remote::{self, RemoteKind};
use super::{BuildError, BuildEvent, Builder, Recorded, StageResult, HISTORY_COMMENT};
use crate::cache::explain::{BuildRecord, StepInputs, StoredStep};
use crate::rootfs::copy::{self, CopyOptions, Item, ItemKind};
use crate::rootfs::layers::{self, change, change_then, FsError};
use crate::rootfs::lookup;

/// Part of every COPY/ADD key: changed whenever a COPY of the same inputs writes something
/// else, so entries an older kiln made are not reused. 2: a `--from` source that is a symlink
/// is followed, `--chown` owns the parents it creates, `--chown=UID` means `UID:UID`. 3: as
/// BuildKit: context source symlinks followed, destination symlinks written through, a
/// created destination directory 0755 and the copy's owner, an empty layer for a copy of
/// nothing.
const COPY_SEMANTICS: &str = "3";

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
    /// ADD (URLs allowed), not COPY.
    pub add: bool,
    /// ADD `--checksum`: the digest a URL's content must have.
    pub checksum: Option<&'a str>,
    /// ADD `--keep-git-dir`: a repository keeps its `.git`.
    pub keep_git_dir: bool,
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

/// A resolved `--from`: a stage (index, key) or an image (layers, manifest digest).
pub(crate) enum FromRef {
    Stage(usize, String),
    Image(Vec<crate::cache::LayerRef>, String),
}

/// Where a COPY's files come from.
enum From {
    Context(Vec<Selected>),
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

    /// Remember a metadata step (its number, text and the key before it) under the key it
    /// left, and put its key in the build record so the next build can tell what changed.
    pub(crate) fn note_meta_step(
        &self,
        id: usize,
        code: &str,
        position: &str,
        key: &Digest,
        parent: Digest,
    ) {
        self.meta_steps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key.to_string(),
                super::MetaOrigin {
                    id,
                    code: code.to_string(),
                    position: position.to_string(),
                    parent: parent.to_string(),
                },
            );
        self.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Recorded::New(StepInputs {
                position: position.to_string(),
                key: key.to_string(),
                inputs: BTreeMap::from([("instruction".to_string(), code.to_string())]),
            }));
    }

    /// When `key` is a metadata step's whose key is new since the previous build: the first
    /// metadata step up its chain that changed, in words (`step #3 LABEL l=2 changed (was:
    /// LABEL l=1)`), or the filesystem step above them that was rebuilt.
    fn meta_change(&self, key: &str) -> Option<String> {
        let prev = self.previous.as_ref()?;
        let prev_key = |pos: &str| prev.step_index(pos).map(|i| prev.steps[i].key.as_str());
        let metas = self.meta_steps.lock().unwrap_or_else(|p| p.into_inner());
        let mut origin = metas.get(key)?;
        if prev_key(&origin.position) == Some(key) {
            return None;
        }
        // Up the chain while the step above also changed.
        while let Some(up) = metas.get(&origin.parent) {
            if prev_key(&up.position) == Some(origin.parent.as_str()) {
                break;
            }
            origin = up;
        }
        let above = self
            .key_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&origin.parent)
            .copied();
        let before = prev
            .step_index(&origin.position)
            .and_then(|i| prev.steps[i].parse())
            .and_then(|s| s.inputs.get("instruction").cloned());
        Some(match before {
            Some(b) if b != origin.code => {
                format!("step #{} {} changed (was: {b})", origin.id, origin.code)
            }
            _ => match above {
                Some(n) => format!("parent step #{n} rebuilt"),
                None => format!("step #{} {} changed", origin.id, origin.code),
            },
        })
    }

    /// Record the step's inputs, then look its key up unless `--no-cache`: on a hit take
    /// its state (and say CACHED), on a miss say why.
    pub(crate) fn lookup(
        &self,
        id: Option<usize>,
        position: &str,
        key: &Digest,
        inputs: &mut dyn FnMut() -> BTreeMap<String, String>,
        cur: &mut StageResult,
    ) -> bool {
        use crate::cache::explain::{compare, explain};
        // What the step adds to the history from here is what its record keeps.
        cur.history_mark = cur.history.len();
        let prev_index = self.previous.as_ref().and_then(|p| p.step_index(position));
        let prev = prev_index.and_then(|i| self.previous.as_ref().map(|p| &p.steps[i]));
        // The same key as last time means the same inputs: reuse last time's record instead
        // of describing every file again (a no-change rebuild stays a stat per file).
        let same_as_before = !self.req.explain && prev.is_some_and(|p| p.key == key.as_str());
        let recorded = match prev_index {
            Some(i) if same_as_before => Recorded::Previous(i),
            _ => {
                let mut inputs = inputs();
                inputs.insert("base".into(), cur.base.clone());
                inputs.insert("parent".into(), cur.key.to_string());
                let ids = self.key_ids.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(n) = ids.get(cur.key.as_str()) {
                    inputs.insert("parent-step".into(), n.to_string());
                }
                drop(ids);
                if let Some(why) = self.meta_change(cur.key.as_str()) {
                    inputs.insert("parent-change".into(), why);
                }
                Recorded::New(StepInputs {
                    position: position.to_string(),
                    key: key.to_string(),
                    inputs,
                })
            }
        };
        // The previous inputs are parsed only to compare or explain.
        let prev_inputs = || prev.and_then(StoredStep::parse);
        if let Some(id) = id {
            self.key_ids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.to_string(), id);
            if self.req.explain {
                self.progress.event(BuildEvent::Explain {
                    id,
                    lines: match &recorded {
                        Recorded::New(step) => compare(prev_inputs().as_ref(), step),
                        Recorded::Previous(_) => Vec::new(),
                    },
                });
            }
        }
        let filtered = cur.stage_name.as_ref().is_some_and(|n| {
            self.req
                .no_cache_filter
                .iter()
                .any(|f| f.eq_ignore_ascii_case(n))
        });
        let mut from = None;
        let found = if self.req.no_cache || filtered {
            None
        } else {
            self.cache.get(key).or_else(|| {
                let hit = self
                    .imported
                    .fetch(self.store, &self.cache, key, &mut |w| {
                        self.progress.event(BuildEvent::Warning(w.clone()));
                        self.warnings
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(w);
                    })?;
                from = Some(hit.source);
                Some(hit.record)
            })
        };
        // The config is the builder's own: the key covers it (see `crate::cache`).
        let hit = match found {
            Some(rec) => {
                cur.history.extend(rec.history);
                cur.state.layers = rec.layers;
                true
            }
            None => false,
        };
        if hit {
            self.used_keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((cur.stage_idx, key.clone()));
        }
        if let Some(id) = id {
            if hit {
                self.progress.event(BuildEvent::Cached { id, from });
            } else {
                let reason = if self.req.no_cache {
                    "--no-cache".to_string()
                } else if filtered {
                    "--no-cache-filter".to_string()
                } else {
                    let prev = prev_inputs();
                    match &recorded {
                        Recorded::New(step) => explain(prev.as_ref(), step),
                        // Same key as last time: the inputs are last time's.
                        Recorded::Previous(_) => match &prev {
                            Some(p) => explain(Some(p), p),
                            None => explain(None, &StepInputs::default()),
                        },
                    }
                };
                self.progress.event(BuildEvent::Miss { id, reason });
            }
        }
        self.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(recorded);
        hit
    }

    /// After a filesystem step (hit or run), the key its successors chain on: the step's
    /// key and the layer it ended with. A step that reran and produced other bytes (a
    /// `--no-cache` rerun, a non-reproducible command) thus invalidates what follows, and
    /// one that produced the same bytes does not.
    fn settle_key(&self, key: &Digest, cur: &mut StageResult) {
        let mut k = KeyBuilder::new("result");
        k.text("step", key.as_str()).opt(
            "top-layer",
            cur.state.layers.last().map(|l| l.diff_id.as_str()),
        );
        let settled = k.finish();
        let mut ids = self.key_ids.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = ids.get(key.as_str()).copied() {
            ids.insert(settled.to_string(), id);
        }
        cur.key = settled;
    }

    /// Save this build's step inputs for the next build's miss reasons.
    pub(crate) fn save_record(&self, path: &std::path::Path) {
        let recorded = self.record.lock().unwrap_or_else(|p| p.into_inner());
        let prev_steps = self.previous.as_ref().map_or(&[][..], |p| &p.steps);
        let new: Vec<StoredStep> = match recorded
            .iter()
            .filter_map(|r| match r {
                Recorded::New(s) => Some(StoredStep::new(s)),
                Recorded::Previous(_) => None,
            })
            .collect()
        {
            Ok(new) => new,
            Err(e) => {
                tracing::warn!(error = %e, "cannot save the build record");
                return;
            }
        };
        let mut new_steps = new.iter();
        let mut steps: Vec<&StoredStep> = recorded
            .iter()
            .filter_map(|r| match r {
                Recorded::Previous(i) => Some(&prev_steps[*i]),
                Recorded::New(_) => new_steps.next(),
            })
            .collect();
        steps.sort_by(|a, b| a.position.cmp(&b.position));
        let unchanged = self.previous.is_some()
            && prev_steps.len() == steps.len()
            && prev_steps
                .iter()
                .zip(&steps)
                .all(|(a, b)| std::ptr::eq(a, *b) || a == *b);
        if unchanged {
            return; // a rebuild that changed nothing rewrites nothing
        }
        let rec = BuildRecord {
            version: crate::cache::explain::RECORD_VERSION,
            steps: steps.into_iter().cloned().collect(),
        };
        drop(recorded);
        let Some(dir) = path.parent() else { return };
        let ok = std::fs::create_dir_all(dir).is_ok()
            && serde_json::to_vec(&rec).is_ok_and(|bytes| {
                crate::common::atomic::write_atomic(dir, path, &bytes, 0o600).is_ok()
            });
        if !ok {
            tracing::warn!(path = %path.display(), "cannot save the build record");
        }
    }

    pub(crate) fn remember(
        &self,
        key: &Digest,
        cur: &StageResult,
        inputs: BTreeMap<String, String>,
    ) {
        // The history entries the step added (since its lookup) travel with the record: a
        // hit restores them (and their times) as the build that made them wrote them, so an
        // unchanged rebuild gives the same image ID.
        let rec = CacheRecord {
            version: CACHE_VERSION,
            key: key.clone(),
            layers: cur.state.layers.clone(),
            history: cur
                .history
                .get(cur.history_mark..)
                .unwrap_or_default()
                .to_vec(),
            inputs,
        };
        if let Err(e) = self.cache.put(&rec) {
            tracing::warn!(error = %e, "cannot record a cache entry");
            return;
        }
        self.used_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((cur.stage_idx, key.clone()));
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

    /// The snapshot directory of the step at `position` in the previous build of this
    /// Dockerfile (the top layer its cache record left), if it is still in the store.
    fn previous_snapshot(&self, position: &str) -> Option<std::path::PathBuf> {
        let prev = self.previous.as_ref()?.step(position)?;
        let rec = self.cache.get(&Digest::parse(&prev.key).ok()?)?;
        let chain = layers::top_chain(&rec.layers)?;
        let snap = self.store.snapshot(&chain).ok()??;
        snap.path.parent().map(std::path::Path::to_path_buf)
    }

    /// The content hashes of the context files at or below `paths` (hashed already), by
    /// host path, with the stat data they were hashed under.
    fn context_hashes(
        &self,
        paths: &[String],
    ) -> Result<std::collections::HashMap<std::path::PathBuf, direct::Hashed>, BuildError> {
        let guard = self.context()?;
        let (ctx, _) = guard.as_ref().expect("scanned by context()");
        let mut hashed = std::collections::HashMap::new();
        for p in paths {
            for (k, e) in ctx.subtree(p) {
                if let (context::Kind::File, Some(h)) = (e.kind, ctx.content_hash(k)) {
                    let h = direct::Hashed {
                        hash: *h,
                        size: e.size,
                        mtime: e.mtime,
                        ctime: e.ctime,
                        ino: e.ino,
                    };
                    hashed.insert(ctx.root().join(k), h);
                }
            }
        }
        Ok(hashed)
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
        let mut urls = Vec::new();
        let mut gits = Vec::new();
        let mut locals = Vec::new();
        for s in &sources {
            match remote::remote_kind(s) {
                Some(_) if !spec.add => {
                    return Err(err(format!(
                        "{s}: COPY does not take URLs; use ADD to fetch a remote file"
                    )))
                }
                Some(RemoteKind::Http) => urls.push(s.clone()),
                Some(RemoteKind::Git) => gits.push(remote::GitSource::parse(s).map_err(&err)?),
                None => locals.push(s.clone()),
            }
        }
        let checksum = match spec.checksum {
            None => None,
            Some(c) => {
                let c = st.expand(c).map_err(&err)?;
                if urls.len() != 1
                    || !locals.is_empty()
                    || !gits.is_empty()
                    || !spec.contents.is_empty()
                {
                    return Err(err(
                        "--checksum needs exactly one source, an http(s) URL".to_string()
                    ));
                }
                Some(remote::parse_checksum(&c).map_err(&err)?)
            }
        };
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
        let chmod_key = chmod.as_ref().map(copy::Chmod::key);
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
        key.text("semantics", COPY_SEMANTICS)
            .text("parent", cur.key.as_str())
            .text("instruction", spec.code)
            .list("sources", &sources)
            .text("dest", &dest)
            .opt("chown", chown.as_deref())
            .opt("chmod", chmod_key.as_deref())
            .list("exclude", &exclude)
            .text("parents", if spec.parents { "1" } else { "0" });
        for (name, data) in &contents {
            key.text("heredoc", name).field("heredoc-data", data);
        }
        let mut inputs = BTreeMap::new();
        // Remote files are fetched on every build (as BuildKit does): their content, not
        // their URL, is what the key sees.
        let mut downloads = Vec::new();
        for url in &urls {
            self.progress.event(BuildEvent::Output {
                id,
                text: format!("fetching {url}\n"),
            });
            let d =
                remote::fetch(url, &self.store.tmp_dir(), self.cancel.as_deref()).map_err(&err)?;
            if let Some(want) = &checksum {
                if *want != d.digest {
                    return Err(err(format!(
                        "ADD {url}: checksum mismatch: expected {want}, got {}",
                        d.digest
                    )));
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
            downloads.push((url.clone(), d));
        }
        // A repository's branch or tag is resolved to a commit, which the key holds: an
        // unchanged one is a cache hit without any clone.
        let mut commits = Vec::new();
        for g in &gits {
            let commit = remote::git_resolve(g).map_err(&err)?;
            self.progress.event(BuildEvent::Output {
                id,
                text: format!("{}#{} is {commit}\n", g.url, g.reference),
            });
            key.text("git", &g.url)
                .text("git-ref", &g.reference)
                .text("git-commit", &commit)
                .text("git-subdir", &g.subdir)
                .text("git-keep-dir", if spec.keep_git_dir { "1" } else { "0" });
            inputs.insert(format!("git:{}#{}", g.url, g.reference), commit.clone());
            commits.push(commit);
        }
        let from = match spec.from {
            None if locals.is_empty() => From::Context(Vec::new()),
            None => {
                let mut guard = self.context()?;
                let (ctx, cache) = guard.as_mut().expect("scanned by context()");
                let mut paths = Vec::new();
                for s in &locals {
                    // Symlinks given as sources are followed inside the context, as
                    // BuildKit does; with --parents a source is copied as it is listed.
                    let found = select(ctx, s, !spec.parents).map_err(|e| err(e.to_string()))?;
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
                ctx.hash_contents(&refs, cache)
                    .map_err(|e| err(e.to_string()))?;
                for p in &paths {
                    let h = ctx
                        .tree_hash(&p.key)
                        .ok_or_else(|| err(format!("{}: changed while it was read", p.name)))?;
                    key.text("source", &p.name)
                        .text("resolved", &p.key)
                        .field("tree", &h);
                }
                From::Context(paths)
            }
            Some(f) => {
                let value = st.expand(f).map_err(&err)?;
                let paths = sources.iter().map(|s| confine(s)).collect();
                match self.resolve_from(&value, stages, spec.location)? {
                    FromRef::Stage(i, k) => {
                        key.text("from-stage", &k);
                        From::Stage(i, paths)
                    }
                    FromRef::Image(layers, digest) => {
                        key.text("from-image", &digest);
                        From::Image(layers, paths)
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
        // Described only when the record of the last build cannot be reused (see lookup).
        let mut describe = || {
            let mut m = inputs.clone();
            let paths = match &from {
                From::Context(paths) if !paths.is_empty() => Some(paths),
                _ => None,
            };
            if let (Some(paths), Ok(guard)) = (paths, self.context()) {
                if let Some((ctx, _)) = guard.as_ref() {
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
                }
            }
            m
        };
        if self.lookup(Some(id), position, &key, &mut describe, cur) {
            self.settle_key(&key, cur);
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
        let many_sources = sources.len() + contents.len() > 1;
        let local_paths = match &from {
            From::Context(paths) if !paths.is_empty() => Some(paths),
            _ => None,
        };
        if let Some(paths) = local_paths {
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
        }
        let local_keys: Vec<String> = local_paths
            .map(|p| p.iter().map(|s| s.key.clone()).collect())
            .unwrap_or_default();
        let mut checkouts = Vec::new();
        for (g, commit) in gits.iter().zip(&commits) {
            self.progress.event(BuildEvent::Output {
                id,
                text: format!("fetching {} at {commit}\n", g.url),
            });
            let dir = remote::git_checkout(g, commit, spec.keep_git_dir, &self.store.tmp_dir())
                .map_err(&err)?;
            checkouts.push((g.subdir.clone(), dir));
        }
        let clamp = self.req.source_date_epoch;
        let work = |merged: &std::path::Path,
                    roots: &[std::path::PathBuf],
                    lowers: &[std::path::PathBuf]|
         -> Result<Option<direct::DirectWrite>, String> {
            let mut opts = opts;
            if let Some(c) = &chown {
                opts.chown = Some(lookup::resolve_owner(merged, c)?);
            }
            let mut srcs = ctx_srcs;
            for p in &stage_paths {
                let root = roots.first().ok_or("the source stage was not mounted")?;
                srcs.push(stage_source(root, p)?);
            }
            for (subdir, dir) in &checkouts {
                srcs.push(stage_source(dir.path(), subdir)?);
            }
            // A symlink at the destination is written through, as BuildKit does: the
            // destination becomes the path it resolves to inside the image (a dangling
            // link's target included), never a host path.
            let dest = &resolve_dest(merged, &dest)?;
            let is_dir = |p: &str| lookup::is_dir_in_root(merged, p);
            let probe = |p: &str| {
                if is_dir(p) {
                    copy::Existing::Dir
                } else if lookup::exists_in_root(merged, p) {
                    copy::Existing::Other
                } else {
                    copy::Existing::Nothing
                }
            };
            let mut items = copy::plan(&srcs, dest, &probe, &opts).map_err(|e| e.to_string())?;
            let dest_rel = super::meta::clean_abs(dest)
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
                    mode: opts.chmod.as_ref().map_or(0o644, |c| c.apply(0o644, false)),
                    uid: opts.chown.map_or(0, |o| o.0),
                    gid: opts.chown.map_or(0, |o| o.1),
                    mtime: clamp.unwrap_or(0),
                });
            }
            for (url, d) in &downloads {
                let into_dir = dest.ends_with('/') || is_dir(&dest_rel);
                if many_sources && !into_dir {
                    return Err(
                        "When using ADD with more than one source file, the destination must be a directory and end with a /".into(),
                    );
                }
                let name = if into_dir {
                    let file = remote::url_file_name(url).ok_or_else(|| {
                        format!("{url}: cannot determine a file name from the URL; give the destination a file name")
                    })?;
                    format!("{dest_rel}/{file}")
                        .trim_start_matches('/')
                        .to_string()
                } else {
                    dest_rel.clone()
                };
                // Docker gives a downloaded file mode 0600 and the server's Last-Modified time.
                let mtime = match (d.mtime, clamp) {
                    (Some(m), Some(c)) => m.min(c),
                    (Some(m), None) => m,
                    (None, c) => c.unwrap_or(0),
                };
                items.push(Item {
                    name,
                    kind: ItemKind::File(d.file.path().to_path_buf()),
                    mode: opts.chmod.as_ref().map_or(0o600, |c| c.apply(0o600, false)),
                    uid: opts.chown.map_or(0, |o| o.0),
                    gid: opts.chown.map_or(0, |o| o.1),
                    mtime,
                });
            }
            // The directories the copy creates above what it copies are the --chown user's
            // and, with an octal --chmod, of that mode (fsutil's MkdirAll); otherwise the
            // extractor makes them 0755 and root's, as BuildKit does.
            let dir_mode = copy::Chmod::created_dir_mode(opts.chmod.as_ref());
            if opts.chown.is_some() || dir_mode != 0o755 {
                let exists = |p: &str| lookup::exists_in_root(merged, p);
                let owner = opts.chown.unwrap_or((0, 0));
                let parents =
                    copy::missing_parents(&items, &exists, owner, dir_mode, clamp.unwrap_or(0));
                items.splice(0..0, parents);
            }
            // Written after the overlay is unmounted: only sources that stay readable then
            // (not a stage's or an image's files, which are read through their own mounts).
            if archives.is_empty() && roots.is_empty() {
                if let Some(plan) = direct::plan(&items, merged, lowers) {
                    return Ok(Some(plan));
                }
            }
            extract_items(&items, merged)?;
            for a in &archives {
                unpack_local_archive(a, merged, &dest_rel, opts.chown)?;
            }
            Ok(None)
        };
        // A COPY that only adds new paths is written after the overlay is gone, straight into
        // the layer's directory, hard-linking what the previous build's snapshot of this step
        // has unchanged.
        let then = |r: Result<Option<direct::DirectWrite>, String>, upper: &std::path::Path| match r
        {
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
        .map_err(fs_err(spec.location))?;
        result.map_err(&err)?;
        // A COPY that copies nothing (a pattern matching nothing) still adds a layer, an
        // empty one, as BuildKit does for every COPY and ADD.
        let layer = match layer {
            Some(l) => l,
            None => {
                let empty = layers::scratch_dir(self.store).map_err(fs_err(spec.location))?;
                layers::commit_dir(self.store, empty.path(), clamp)
                    .map_err(fs_err(spec.location))?
            }
        };
        cur.state.layers.push(layer);
        self.history(cur, format!("{} # kiln", spec.code), true);
        self.settle_key(&key, cur);
        self.remember(&key, cur, inputs);
        Ok(())
    }

    /// A `--from` value (COPY, RUN --mount): a built stage (its index and key) or an image
    /// of the store (its layers and manifest digest).
    pub(crate) fn resolve_from(
        &self,
        value: &str,
        stages: &BTreeMap<usize, StageResult>,
        location: Location,
    ) -> Result<FromRef, BuildError> {
        let err = step_err(location);
        let names: Vec<Option<String>> = self.plan.stages.iter().map(|s| s.name.clone()).collect();
        match resolve_source(value, &names, location).map_err(|e| err(e.to_string()))? {
            PlanSource::Stage(i) => {
                let src = stages
                    .get(&i)
                    .ok_or_else(|| err(format!("stage {value} is not built before it is used")))?;
                Ok(FromRef::Stage(i, src.key.to_string()))
            }
            PlanSource::Image(name) => {
                let rec = self.image(&name, location)?;
                let layers = super::image_layers(&rec);
                Ok(FromRef::Image(layers, rec.manifest_digest.to_string()))
            }
        }
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
        if self.lookup(None, position, &key, &mut || inputs.clone(), cur) {
            self.settle_key(&key, cur);
            return Ok(());
        }
        // The directory a `/a/../b` WORKDIR names.
        let wd2 = crate::executor::clean_workdir(&wd);
        let user = cur.state.spec.config.user.clone();
        let (r, layer) = change(
            self.store,
            &cur.state.layers,
            &[],
            self.req.source_date_epoch,
            move |merged, _| {
                if lookup::is_dir_in_root(merged, &wd2) {
                    return Ok(());
                }
                // As BuildKit: the directories WORKDIR makes belong to the current USER, so
                // `USER app` then `WORKDIR /x` gives app a directory it can write.
                let (uid, gid) = if user.is_empty() {
                    (0, 0)
                } else {
                    lookup::resolve_owner(merged, &user)?
                };
                let mut items = Vec::new();
                let mut path = String::new();
                for comp in wd2.split('/').filter(|c| !c.is_empty() && *c != ".") {
                    if !path.is_empty() {
                        path.push('/');
                    }
                    path.push_str(comp);
                    if lookup::exists_in_root(merged, &path) && items.is_empty() {
                        continue;
                    }
                    items.push(Item {
                        name: path.clone(),
                        kind: ItemKind::Dir,
                        mode: 0o755,
                        uid,
                        gid,
                        mtime: 0,
                    });
                }
                extract_items(&items, merged)
            },
        )
        .map_err(fs_err(location))?;
        r.map_err(step_err(location))?;
        if let Some(l) = layer {
            cur.state.layers.push(l);
        }
        self.settle_key(&key, cur);
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
                whiteouts: crate::archive::WhiteoutMode::Refuse,
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

/// A `COPY --from` source in a stage's root. A source that is itself a symlink is followed
/// (inside the root) and copied under the link's name, as both of Docker's builders do;
/// symlinks below a source directory stay symlinks.
fn stage_source(root: &std::path::Path, path: &str) -> Result<copy::Source, String> {
    let (dir, name) = real_path_in_root(root, path)?;
    let is_link = !name.is_empty()
        && std::fs::symlink_metadata(dir.join(&name)).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        return copy::tree_source(&dir, &name).map_err(|e| format!("{path}: {e}"));
    }
    let fd = lookup::open_in_root(root, path, libc::O_PATH)
        .map_err(|e| format!("/{}: {e}", path.trim_start_matches('/')))?;
    use std::os::fd::AsRawFd;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| format!("{path}: {e}"))?;
    let (tdir, tname) = match (real.strip_prefix(root), real.parent(), real.file_name()) {
        (Ok(r), _, _) if r.as_os_str().is_empty() => (root.to_path_buf(), String::new()),
        (Ok(_), Some(parent), Some(file)) => {
            (parent.to_path_buf(), file.to_string_lossy().into_owned())
        }
        _ => return Err(format!("{path}: resolves outside the source stage")),
    };
    Ok(copy::tree_source(&tdir, &tname)
        .map_err(|e| format!("{path}: {e}"))?
        .renamed(&name))
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
    let fd = lookup::open_in_root(root, parent, libc::O_PATH | libc::O_DIRECTORY)
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

/// A local file ADD unpacks: a tar, plain or compressed with gzip, bzip2, xz or zstd,
/// decided by content as BuildKit does ([`archive::is_tar_stream`]).
fn is_local_archive(file: &crate::context::ContextFile) -> bool {
    file.open().is_ok_and(archive::is_tar_stream)
}

/// Unpacks the local archive `a` into `dest` of the image root `merged` (resolved inside
/// it), with every entry owned by `owner` when given (`ADD --chown`).
fn unpack_local_archive(
    a: &crate::context::ContextFile,
    merged: &std::path::Path,
    dest: &str,
    owner: Option<(u32, u32)>,
) -> Result<(), String> {
    let shown = |e: &dyn std::fmt::Display| format!("{}: {e}", a.host().display());
    let f = a.open().map_err(|e| shown(&e))?;
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
    .map_err(|e| shown(&e))
}

impl Builder<'_> {
    /// RUN: the command in a sandbox over the stage's layers; what it changed is a layer.
    pub(crate) fn run_step(
        &self,
        id: usize,
        cur: &mut StageResult,
        r: &crate::parser::instructions::Run,
        stages: &BTreeMap<usize, StageResult>,
        position: &str,
    ) -> Result<(), BuildError> {
        use crate::executor::{self, ExitStatus, Output, RwLayer, StepIo, StepSpec};
        use crate::parser::instructions::ShellOrExec;
        use crate::parser::runflags::NetworkMode as RunNetwork;

        let err = step_err(r.location);
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
        let mut env = cur.state.run_env();
        // The proxy build args reach RUN without an ARG, as in Docker, and stay out of the
        // image's config and history.
        for (k, v) in &self.req.build_args {
            if crate::planner::PROXY_ARGS.contains(&k.as_str())
                && !env
                    .iter()
                    .any(|e| e.split_once('=').is_some_and(|(n, _)| n == k))
            {
                env.push(format!("{k}={v}"));
            }
        }
        let user = cur.state.spec.config.user.clone();
        // The config keeps an absolute WORKDIR as written (`/a/../b`); the step runs in the
        // directory it names.
        let workdir = executor::clean_workdir(&cur.state.spec.config.working_dir);
        let network = match r.network {
            RunNetwork::None => executor::NetworkMode::None,
            RunNetwork::Host => {
                // BuildKit's network.host entitlement: the host's network (its loopback
                // services included) only when the one building asked for it.
                if !self.req.allow_network_host && self.req.network != executor::NetworkMode::Host {
                    return Err(err(
                        "network.host is not allowed: RUN --network=host needs \
                         `kiln build --allow network.host`"
                            .to_string(),
                    ));
                }
                executor::NetworkMode::Host
            }
            _ => self.req.network,
        };
        let network_name = match network {
            executor::NetworkMode::Sandbox => "sandbox",
            executor::NetworkMode::Host => "host",
            executor::NetworkMode::None => "none",
        };
        // Mounts are prepared before the key: a bind's content is part of it.
        let fse = fs_err(r.location);
        let scratch = layers::scratch_dir(self.store).map_err(&fse)?;
        let mounts = self.prepare_mounts(cur, &r.mounts, scratch.path(), stages, r.location)?;
        let mut key = KeyBuilder::new("run");
        key.list("mounts", &mounts.key_parts);
        key.text("parent", cur.key.as_str())
            .list("argv", &argv)
            .list("env", &env)
            .text("user", &user)
            .text("workdir", &workdir)
            .text("network", network_name);
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
        inputs.insert("network".to_string(), network_name.to_string());
        if self.lookup(Some(id), position, &key, &mut || inputs.clone(), cur) {
            self.settle_key(&key, cur);
            return Ok(());
        }

        for p in &mounts.pending {
            p.run(self.store)
                .map_err(|e| err(format!("RUN --mount: {e}")))?;
        }
        let lowers = layers::lower_dirs(self.store, &cur.state.layers).map_err(&fse)?;
        let res = self
            .store
            .reserve_snapshot()
            .map_err(|e| err(e.to_string()))?;
        let work = scratch.path().join("work");
        std::fs::create_dir(&work).map_err(|e| err(e.to_string()))?;
        let mut spec = StepSpec::new(lowers, scratch.path(), argv.clone());
        spec.rw = RwLayer::Dirs {
            upper: res.path(),
            work,
        };
        spec.env = env;
        // Set for the run only: not in the key, the config or the history.
        if let Some(sock) = &mounts.ssh_sock {
            if !spec.env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                spec.env.push(format!("SSH_AUTH_SOCK={sock}"));
            }
        }
        spec.workdir = workdir;
        spec.user = user;
        spec.network = network;
        // A namespace of the build's pool, connected already: the step joins it (a setns)
        // instead of starting a pasta of its own.
        let net = match network {
            executor::NetworkMode::Sandbox => Some(
                self.netpool
                    .take()
                    .map_err(|e| err(format!("the step's network: {e}")))?,
            ),
            _ => None,
        };
        spec.netns = net.as_ref().and_then(|n| n.netns());
        spec.cancel = self.cancel.clone();
        spec.extra_hosts = self.req.extra_hosts.clone();
        // BuildKit's RUN: one fixed hostname (a random one would differ between two stores
        // in whatever a step writes of it) and no /etc/hostname.
        spec.hostname = Some("buildkitsandbox".to_string());
        spec.build_step = true;
        spec.binds = mounts.binds.clone();
        let progress = self.progress;
        // The full output goes to the step's log file (never clipped) as well as to the
        // progress display.
        // Step logs hold what the step echoed (build args included): private to the owner.
        let log = self.req.logs_dir.as_ref().and_then(|d| {
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .ok()?;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(d.join(format!("step-{id}.log")))
                .ok()
        });
        let log = std::sync::Mutex::new(log);
        let emit = |line: &[u8]| {
            if let Some(f) = log.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                use std::io::Write;
                let _ = f.write_all(line).and_then(|_| f.write_all(b"\n"));
            }
            progress.event(BuildEvent::Output {
                id,
                text: String::from_utf8_lossy(line).into_owned(),
            })
        };
        let mut out = |line: &[u8]| emit(line);
        let mut errs = |line: &[u8]| emit(line);
        let outcome = executor::run_step(
            &spec,
            StepIo {
                stdin: Default::default(),
                stdout: Output::Lines(&mut out),
                stderr: Output::Lines(&mut errs),
                on_start: None,
                console: None,
                on_ready: None,
            },
        );
        // run_step has reaped the step's PID 1, so its PID namespace is empty: no process of
        // the step (and no socket of one) is left in the namespace the next step gets.
        drop(net);
        let outcome = outcome.map_err(|e| err(e.to_string()))?;
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
            let layer = layers::commit_run_dir(
                self.store,
                &upper,
                &spec.lowers,
                self.req.source_date_epoch,
            )
            .map_err(&fse)?;
            res.commit(
                layers::top_chain(&cur.state.layers).as_ref(),
                &layer.diff_id,
            )
            .map_err(|e| err(e.to_string()))?;
            cur.state.layers.push(layer);
        }
        // The step's directory and scratch files go away while the next step starts.
        let step_dir = outcome.step_dir;
        self.later(move || {
            let _ = executor::remove_step_dir(&step_dir);
            drop(scratch);
        });
        self.history(cur, created_by, changed);
        self.settle_key(&key, cur);
        self.remember(&key, cur, BTreeMap::new());
        Ok(())
    }
}

/// What a `RUN --mount` turns into for one run: binds for the executor, what the cache key
/// needs, and the locks and scratch files to keep until the step is over.
#[derive(Default)]
pub(crate) struct MountSet {
    pub binds: Vec<crate::executor::BindMount>,
    pub key_parts: Vec<String>,
    /// `sharing=locked` caches, held until the step is over.
    pub locks: Vec<nix::fcntl::Flock<std::fs::File>>,
    /// The first ssh mount's target: the step's `SSH_AUTH_SOCK`.
    pub ssh_sock: Option<String>,
    /// Copies from other stages, made only when the step runs.
    pub pending: Vec<super::mountsrc::Pending>,
}

impl Builder<'_> {
    /// Prepare `RUN --mount` values: `bind` (from the context; read-only unless `rw`, writes
    /// discarded), `cache` (persistent per id under kiln's cache directory), `tmpfs` (an
    /// empty, discarded directory) and `secret` (from `--secret`, never in a layer, a key
    /// or the history).
    pub(crate) fn prepare_mounts(
        &self,
        cur: &StageResult,
        raws: &[crate::parser::runflags::MountSpec],
        scratch: &std::path::Path,
        stages: &BTreeMap<usize, StageResult>,
        location: Location,
    ) -> Result<MountSet, BuildError> {
        use crate::executor::BindMount;
        use crate::parser::runflags::{parse_mount, MountType, Sharing};
        let err = step_err(location);
        let mut set = MountSet::default();
        let expand = |s: &str| cur.state.expand(s);
        for (i, spec) in raws.iter().enumerate() {
            let m = parse_mount(&spec.raw, &expand).map_err(|e| err(e.to_string()))?;
            let target = |default: Option<String>| -> Result<String, BuildError> {
                let t = m.target.clone().or(default).ok_or_else(|| {
                    err(format!("RUN --mount={}: a target is required", spec.raw))
                })?;
                Ok(if t.starts_with('/') {
                    t
                } else {
                    let wd = &cur.state.spec.config.working_dir;
                    super::meta::clean_abs(&format!("{}/{t}", if wd.is_empty() { "/" } else { wd }))
                })
            };
            match m.kind {
                MountType::Bind if m.from.is_some() => {
                    // From a stage or an image: the step gets a private copy of the source
                    // (resolved inside that root), so writes are discarded either way; the
                    // key names the mounted stage's key or the image's digest.
                    let target = target(None)?;
                    let from = m.from.as_deref().unwrap_or_default();
                    let (layers, ident) = self.mount_from(from, stages, location)?;
                    let path = confine(m.source.as_deref().unwrap_or("/"));
                    set.key_parts
                        .push(format!("bind:{target}:from={ident}:{path}:{}", m.read_only));
                    let dst = scratch.join(format!("bind-{i}"));
                    set.pending.push(super::mountsrc::Pending::Copy {
                        layers,
                        path,
                        dst: dst.clone(),
                    });
                    set.binds.push(BindMount {
                        source: dst,
                        target,
                        readonly: m.read_only,
                    });
                }
                MountType::Bind => {
                    let target = target(None)?;
                    let rel = confine(m.source.as_deref().unwrap_or("."));
                    let mut guard = self.context()?;
                    let (ctx, cache) = guard.as_mut().expect("scanned by context()");
                    // A path under a symlink is never in the scan, and a symlink itself is
                    // refused: a bind must not lead out of the context.
                    match ctx.get(&rel).map(|e| e.kind) {
                        None => {
                            return Err(err(format!(
                                "RUN --mount source \"{rel}\": not found in the build context"
                            )))
                        }
                        Some(context::Kind::Symlink) => {
                            return Err(err(format!(
                                "RUN --mount source \"{rel}\" is a symlink; refusing to follow it"
                            )))
                        }
                        Some(_) => {}
                    }
                    ctx.hash_contents(&[rel.as_str()], cache)
                        .map_err(|e| err(e.to_string()))?;
                    let h = ctx
                        .tree_hash(&rel)
                        .ok_or_else(|| err("context changed".into()))?;
                    set.key_parts.push(format!(
                        "bind:{target}:{rel}:{}:{}",
                        context::hex(&h),
                        m.read_only
                    ));
                    // The step gets a copy made from the files as listed (each opened below the
                    // context root through no symlink, and checked to be the one hashed), so a
                    // directory swapped for a symlink is an error, never a mount of its target.
                    // A bind of the real directory would need its fd, and mount(2) refuses a
                    // source from kiln's mount namespace once the step has its own (EINVAL);
                    // writes to an rw bind are thrown away with the copy.
                    // Made only when the step runs (a cache hit makes none).
                    let source = scratch.join(format!("bind-{i}"));
                    set.pending.push(super::mountsrc::Pending::Context {
                        tree: ctx.tree(&rel),
                        dst: source.clone(),
                    });
                    drop(guard);
                    set.binds.push(BindMount {
                        source,
                        target,
                        readonly: m.read_only,
                    });
                }
                MountType::Cache => {
                    let target = target(None)?;
                    let id = m.id.clone().unwrap_or_else(|| target.clone());
                    let base = self.store.root().join("cache").join("mounts-v1");
                    // A cache seeded from a stage is its own cache: one per id and stage key
                    // (or image digest), as in BuildKit.
                    let seed = match m.from.as_deref() {
                        Some(f) => Some(self.mount_from(f, stages, location)?),
                        None => None,
                    };
                    let ident = match &seed {
                        Some((_, ident)) => format!("{id}\0from={ident}"),
                        None => id.clone(),
                    };
                    let name = context::hex(&Sha256::digest(ident.as_bytes()).into());
                    let dir = base.join(&name);
                    if let Some((layers, _)) = seed {
                        std::fs::create_dir_all(&base).map_err(|e| err(e.to_string()))?;
                        set.pending.push(super::mountsrc::Pending::Seed {
                            layers,
                            path: confine(m.source.as_deref().unwrap_or("/")),
                            dir: dir.clone(),
                        });
                    } else if !dir.exists() {
                        std::fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
                        use std::os::unix::fs::PermissionsExt;
                        let mode = m.mode.unwrap_or(0o755);
                        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                            .map_err(|e| err(e.to_string()))?;
                        let _ = std::os::unix::fs::chown(&dir, m.uid, m.gid);
                    }
                    let mut source = dir.clone();
                    if let Some(sub) = m.source.as_ref().filter(|_| m.from.is_none()) {
                        // source= picks a subdirectory of the cache: confined, and refused when
                        // any component is a symlink (a step could plant one).
                        let sub = confine(sub);
                        let mut p = dir.clone();
                        for comp in sub.split('/').filter(|c| !c.is_empty()) {
                            p.push(comp);
                            match std::fs::symlink_metadata(&p) {
                                Ok(md) if md.file_type().is_symlink() => {
                                    return Err(err(format!(
                                        "RUN --mount cache source \"{sub}\" goes through a symlink; refusing it"
                                    )))
                                }
                                Ok(_) => {}
                                Err(_) => std::fs::create_dir(&p).map_err(|e| err(e.to_string()))?,
                            }
                        }
                        source = p;
                    }
                    if m.sharing == Some(Sharing::Locked) {
                        let lock = std::fs::File::create(base.join(format!("{name}.lock")))
                            .map_err(|e| err(e.to_string()))?;
                        // Held (and released on drop) for as long as the step runs.
                        let held =
                            nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
                                .map_err(|(_, e)| err(e.to_string()))?;
                        set.locks.push(held);
                    }
                    set.key_parts
                        .push(format!("cache:{target}:{ident}:{}", m.read_only));
                    set.binds.push(BindMount {
                        source,
                        target,
                        readonly: m.read_only,
                    });
                }
                MountType::Tmpfs => {
                    let target = target(None)?;
                    let dir = scratch.join(format!("tmpfs-{i}"));
                    std::fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
                    set.key_parts.push(format!("tmpfs:{target}"));
                    set.binds.push(BindMount {
                        source: dir,
                        target,
                        readonly: false,
                    });
                }
                MountType::Secret => {
                    let id =
                        m.id.clone()
                            .or_else(|| {
                                m.target
                                    .as_ref()
                                    .and_then(|t| t.rsplit('/').next().map(str::to_string))
                            })
                            .unwrap_or_default();
                    let Some(value) = self.req.secrets.get(&id) else {
                        if m.required {
                            return Err(err(format!(
                                "secret {id} not provided (use --secret id={id},src=FILE)"
                            )));
                        }
                        continue;
                    };
                    let target = target(Some(format!("/run/secrets/{id}")))?;
                    let file = scratch.join(format!("secret-{i}"));
                    {
                        use std::io::Write;
                        use std::os::unix::fs::OpenOptionsExt;
                        let mut f = std::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(m.mode.unwrap_or(0o400))
                            .open(&file)
                            .map_err(|e| err(e.to_string()))?;
                        f.write_all(value).map_err(|e| err(e.to_string()))?;
                    }
                    let _ = std::os::unix::fs::chown(&file, m.uid, m.gid);
                    // Only the id reaches the key: the value never does.
                    set.key_parts.push(format!("secret:{target}:{id}"));
                    set.binds.push(BindMount {
                        source: file,
                        target,
                        readonly: true,
                    });
                }
                MountType::Ssh => {
                    // The agent's socket is bound into the step; only the id and the target
                    // reach the key, never the host path.
                    let id = m.id.clone().unwrap_or_else(|| "default".to_string());
                    let Some(sock) = self.req.ssh.get(&id) else {
                        if m.required {
                            return Err(err(format!(
                                "no SSH agent forwarded for id {id} (use --ssh {id}[=SOCKET|KEY])"
                            )));
                        }
                        continue;
                    };
                    let n = set
                        .key_parts
                        .iter()
                        .filter(|k| k.starts_with("ssh:"))
                        .count();
                    let target = target(Some(format!("/run/buildkit/ssh_agent.{n}")))?;
                    set.key_parts.push(format!("ssh:{target}:{id}"));
                    set.ssh_sock.get_or_insert_with(|| target.clone());
                    set.binds.push(BindMount {
                        source: sock.clone(),
                        target,
                        readonly: false,
                    });
                }
            }
        }
        Ok(set)
    }
}

impl Builder<'_> {
    /// The layers of a mount's `from=` stage or image, and what names it in the step's key.
    fn mount_from(
        &self,
        from: &str,
        stages: &BTreeMap<usize, StageResult>,
        location: Location,
    ) -> Result<(Vec<crate::cache::LayerRef>, String), BuildError> {
        Ok(match self.resolve_from(from, stages, location)? {
            FromRef::Stage(i, key) => (stages[&i].state.layers.clone(), format!("stage:{key}")),
            FromRef::Image(layers, digest) => (layers, format!("image:{digest}")),
        })
    }
}

/// A COPY destination with its symlinks followed inside the image root `merged` (see
/// [`lookup::resolve_in_root`]), absolute, keeping a trailing `/` (`/.` becomes `/`).
fn resolve_dest(merged: &std::path::Path, dest: &str) -> Result<String, String> {
    let trailing = dest.ends_with('/') || dest.ends_with("/.");
    let resolved = lookup::resolve_in_root(merged, &super::meta::clean_abs(dest))
        .map_err(|e| format!("{dest}: {e}"))?;
    Ok(if trailing && !resolved.is_empty() {
        format!("/{resolved}/")
    } else {
        format!("/{resolved}")
    })
}
