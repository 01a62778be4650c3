//! The cache bookkeeping every step shares: the build context and its stat cache, looking a
//! step's key up (and saying why it missed), recording its result, its history entry, and
//! this build's record of step inputs for the next build's miss reasons.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

use crate::cache::{CacheRecord, KeyBuilder, CACHE_VERSION};
use crate::context::{self, Context, ContextError, StatCache};
use crate::image::spec::History;
use crate::image::Digest;

use super::direct;
use super::{BuildEvent, Builder, Recorded, StageResult, HISTORY_COMMENT};
use crate::cache::explain::{BuildRecord, StepInputs, StoredStep};

/// Whether `dir` is in the store's temporary area: made for this build only.
pub(crate) fn is_ephemeral(store: &crate::store::Store, dir: &std::path::Path) -> bool {
    match (
        std::fs::canonicalize(dir),
        std::fs::canonicalize(store.tmp_dir()),
    ) {
        (Ok(d), Ok(t)) => d.starts_with(t),
        _ => false,
    }
}

impl Builder<'_> {
    /// The build context, scanned on first use, with its stat cache.
    pub(crate) fn context(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, Option<(Context, StatCache)>>, ContextError> {
        let mut guard = self
            .shared
            .context
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let ctx = Context::scan(&self.req.context_dir, &self.req.ignore)?;
            let cache = self.stat_cache(&self.req.context_dir);
            *guard = Some((ctx, cache));
        }
        Ok(guard)
    }

    /// The stat cache of a context directory, kept in the store by the directory's path;
    /// one in memory only for a directory in the store's temporary area (a context read
    /// from standard input, a fetched one), whose path no later build has.
    pub(crate) fn stat_cache(&self, dir: &std::path::Path) -> StatCache {
        if is_ephemeral(self.store, dir) {
            return StatCache::in_memory();
        }
        let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let name = context::hex(&Sha256::digest(abs.as_os_str().as_encoded_bytes()).into());
        StatCache::load(
            &self
                .store
                .root()
                .join("contexts")
                .join(format!("{name}.statcache-v1")),
        )
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
        use crate::cache::explain::compare;
        // What the step adds to the history from here is what its record keeps.
        cur.history_mark = cur.history.len();
        let prev_index = self.previous.as_ref().and_then(|p| p.step_index(position));
        let prev = prev_index.and_then(|i| self.previous.as_ref().map(|p| &p.steps[i]));
        let recorded = self.step_inputs(position, key, inputs, cur, prev_index);
        if let Some(id) = id {
            self.key_ids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.to_string(), id);
            if self.req.explain {
                // The previous inputs are parsed only to compare or explain.
                self.progress.event(BuildEvent::Explain {
                    id,
                    lines: match &recorded {
                        Recorded::New(step) => {
                            compare(prev.and_then(StoredStep::parse).as_ref(), step)
                        }
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
        let (found, from) = if self.req.no_cache || filtered {
            (None, None)
        } else {
            // A step another platform's build is running is waited for, then found in the
            // cache: steps shared by the platforms run once.
            loop {
                let r = self.find_record(key);
                if r.0.is_some() || self.shared.flights.take_off(key) {
                    break r;
                }
            }
        };
        // The config is the builder's own: the key covers it (see `crate::cache`).
        let hit = found.is_some();
        if let Some(rec) = found {
            cur.history.extend(rec.history);
            cur.state.layers = rec.layers;
            self.used_keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((cur.stage_idx, key.clone()));
        }
        match id {
            Some(id) if hit => self.progress.event(BuildEvent::Cached { id, from }),
            Some(id) => {
                let reason = self.miss_reason(filtered, prev, &recorded);
                self.progress.event(BuildEvent::Miss { id, reason });
            }
            None => {}
        }
        self.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(recorded);
        hit
    }

    /// The step's inputs for the build record. The same key as last time means the same
    /// inputs: last time's record is reused instead of describing every file again (a
    /// no-change rebuild stays a stat per file).
    fn step_inputs(
        &self,
        position: &str,
        key: &Digest,
        inputs: &mut dyn FnMut() -> BTreeMap<String, String>,
        cur: &StageResult,
        prev_index: Option<usize>,
    ) -> Recorded {
        let prev = prev_index.and_then(|i| self.previous.as_ref().map(|p| &p.steps[i]));
        let same_as_before = !self.req.explain && prev.is_some_and(|p| p.key == key.as_str());
        if let (Some(i), true) = (prev_index, same_as_before) {
            return Recorded::Previous(i);
        }
        let mut inputs = inputs();
        inputs.insert("base".into(), cur.base.clone());
        inputs.insert("platform".into(), cur.platform.to_string());
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

    /// The record of `key`: the local cache's, or a `--cache-from` cache's (named).
    fn find_record(&self, key: &Digest) -> (Option<CacheRecord>, Option<String>) {
        if let Some(rec) = self.cache.get(key) {
            return (Some(rec), None);
        }
        let hit = self.imported.fetch(self.store, &self.cache, key, &mut |w| {
            self.progress.event(BuildEvent::Warning(w.clone()));
            self.warnings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(w);
        });
        match hit {
            Some(hit) => (Some(hit.record), Some(hit.source)),
            None => (None, None),
        }
    }

    /// Why a step missed, in words.
    fn miss_reason(
        &self,
        filtered: bool,
        prev: Option<&StoredStep>,
        recorded: &Recorded,
    ) -> String {
        use crate::cache::explain::{explain, explain_stored};
        if self.req.no_cache {
            return "--no-cache".to_string();
        }
        if filtered {
            return "--no-cache-filter".to_string();
        }
        match recorded {
            Recorded::New(step) => explain_stored(prev, step),
            // Same key as last time: the inputs are last time's.
            Recorded::Previous(_) => match prev.and_then(|p| Some((p, p.parse()?))) {
                Some((stored, p)) => explain_stored(Some(stored), &p),
                None => explain(None, &StepInputs::default()),
            },
        }
    }

    /// After a filesystem step (hit or run), the key its successors chain on: the step's
    /// key and the layer it ended with. A step that reran and produced other bytes (a
    /// `--no-cache` rerun, a non-reproducible command) thus invalidates what follows, and
    /// one that produced the same bytes does not.
    pub(crate) fn settle_key(&self, key: &Digest, cur: &mut StageResult) {
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
        // A step looked up that neither hit nor stored its result did not finish (its RUN
        // failed, the build stopped): the next build's miss says so. Metadata steps have no
        // entries of their own.
        let entries: std::collections::HashSet<String> = self
            .used_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, k)| k.to_string())
            .collect();
        let metas = self.meta_steps.lock().unwrap_or_else(|p| p.into_inner());
        let unfinished = |s: &StoredStep| !entries.contains(&s.key) && !metas.contains_key(&s.key);
        let unchanged = self.previous.is_some()
            && prev_steps.len() == steps.len()
            && prev_steps
                .iter()
                .zip(&steps)
                .all(|(a, b)| (std::ptr::eq(a, *b) || a == *b) && a.unfinished == unfinished(b));
        if unchanged {
            return; // a rebuild that changed nothing rewrites nothing
        }
        let rec = BuildRecord {
            version: crate::cache::explain::RECORD_VERSION,
            steps: steps
                .into_iter()
                .map(|s| {
                    let mut s = s.clone();
                    s.unfinished = unfinished(&s);
                    s
                })
                .collect(),
        };
        drop(metas);
        drop(recorded);
        let Some(dir) = path.parent() else { return };
        let ok = std::fs::create_dir_all(dir).is_ok()
            && serde_json::to_vec(&rec).is_ok_and(|bytes| {
                crate::store::fsutil::write_atomic(dir, path, &bytes, 0o600).is_ok()
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
    pub(crate) fn history(&self, cur: &mut StageResult, created_by: String, layer: bool) {
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
    pub(crate) fn previous_snapshot(&self, position: &str) -> Option<std::path::PathBuf> {
        let prev = self.previous.as_ref()?.step(position)?;
        let rec = self.cache.get(&Digest::parse(&prev.key).ok()?)?;
        let chain = crate::rootfs::layers::top_chain(&rec.layers)?;
        let snap = self.store.snapshot(&chain).ok()??;
        snap.path.parent().map(std::path::Path::to_path_buf)
    }

    /// The content hashes of the context files at or below `paths` (hashed already), by
    /// host path, with the stat data they were hashed under.
    pub(crate) fn context_hashes(
        &self,
        paths: &[String],
    ) -> Result<std::collections::HashMap<std::path::PathBuf, direct::Hashed>, ContextError> {
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
}
