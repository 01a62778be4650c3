//! A stage, step by step: its base (scratch, a stage, an image), the base's ONBUILD triggers
//! and its own ops, each metadata, RUN or COPY op run as a step; stages whose dependencies
//! are built run in parallel.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::cache::KeyBuilder;
use crate::image::spec::{History, ImageSpec};
use crate::planner::ops::{MetaOp, Op, OpKind, TriggerError};
use crate::planner::Base;
use crate::planner::Location;

use super::copystep::{extract_items, WriteError};
use super::error::CopyError;
use super::meta;
use super::state::StageState;
use super::{
    image_layers, BuildError, BuildEvent, Builder, PendingMeta, StageResult, HISTORY_COMMENT,
};
use crate::rootfs::copy::{Item, ItemKind};
use crate::rootfs::layers::{change, FsError};
use crate::rootfs::lookup;

impl Builder<'_> {
    /// Build the needed stages; stages whose dependencies are done run in parallel.
    pub(super) fn run_stages(&self) -> Result<BTreeMap<usize, StageResult>, BuildError> {
        let mut results: BTreeMap<usize, StageResult> = BTreeMap::new();
        let mut pending: Vec<usize> = self.plan.order.clone();
        while !pending.is_empty() {
            let (ready, rest): (Vec<usize>, Vec<usize>) = pending.iter().partition(|i| {
                self.plan.stages[**i]
                    .deps
                    .iter()
                    .all(|d| results.contains_key(d))
            });
            if ready.is_empty() {
                // The planner orders dependencies first; this would be a cycle it missed.
                return Err(BuildError::StageCycle {
                    location: self.plan.stages[pending[0]].location,
                });
            }
            let done: Vec<(usize, Result<StageResult, BuildError>)> = if ready.len() == 1 {
                vec![(ready[0], self.build_stage(ready[0], &results))]
            } else {
                std::thread::scope(|s| {
                    let handles: Vec<_> = ready
                        .iter()
                        .map(|&i| {
                            let results = &results;
                            (i, s.spawn(move || self.build_stage(i, results)))
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|(i, h)| (i, h.join().unwrap_or(Err(BuildError::Panicked))))
                        .collect()
                })
            };
            for (i, r) in done {
                results.insert(i, r?);
            }
            pending = rest;
        }
        Ok(results)
    }

    fn base_state(
        &self,
        idx: usize,
        results: &BTreeMap<usize, StageResult>,
    ) -> Result<StageResult, BuildError> {
        // Layers are committed with their mtimes clamped to SOURCE_DATE_EPOCH: a layer built
        // without it (or with another) is other bytes, so the epoch is in every chain's root.
        let epoch = self.req.source_date_epoch.map(|e| e.to_string());
        let epoch = epoch.as_deref();
        let mut r = self.base_stage(idx, results, epoch)?;
        // As BuildKit: a stage whose base sets no PATH gets the default one in its config.
        let env = &mut r.state.spec.config.env;
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(format!("PATH={}", crate::executor::DEFAULT_PATH));
        }
        Ok(r)
    }

    fn base_stage(
        &self,
        idx: usize,
        results: &BTreeMap<usize, StageResult>,
        epoch: Option<&str>,
    ) -> Result<StageResult, BuildError> {
        let stage = &self.plan.stages[idx];
        // The platform is in the key of every chain's root, so a step's result for one
        // platform never answers for another (the same Dockerfile, the same base).
        let platform = stage.platform.to_string();
        match &stage.base {
            Base::Scratch => Ok(StageResult {
                state: StageState::new(
                    // BuildKit's empty image has WorkingDir "/" (and the default PATH, which
                    // base_state adds to every stage without one).
                    empty_image(&stage.platform),
                    Vec::new(),
                    self.escape,
                ),
                key: {
                    let mut key = KeyBuilder::new("scratch");
                    key.opt("source-date-epoch", epoch)
                        .text("platform", &platform);
                    key.finish()
                },
                history: Vec::new(),
                history_mark: 0,
                base: "scratch".to_string(),
                stage_name: None,
                stage_idx: idx,
                platform: stage.platform.clone(),
            }),
            Base::Stage(i) => {
                let mut r = results
                    .get(i)
                    .cloned()
                    .expect("dependencies are built first");
                r.state.args.clear();
                r.state.cmd_set = false;
                r.base = format!("stage {}", r.key);
                Ok(r)
            }
            Base::Image(name) => {
                let rec = self.image(
                    name,
                    (&stage.platform, stage.platform_given),
                    stage.location,
                )?;
                self.image_base(name, &rec, idx, epoch, stage.location)
            }
            Base::Context(name) => {
                let ctx = self.named_context(name, stage.location)?;
                match &ctx.image {
                    Some(rec) => self.image_base(name, rec, idx, epoch, stage.location),
                    // A directory: BuildKit's empty image with the directory's files.
                    None => {
                        let mut key = KeyBuilder::new("named-context");
                        key.text("context", &ctx.ident)
                            .opt("source-date-epoch", epoch)
                            .text("platform", &platform);
                        Ok(StageResult {
                            state: StageState::new(
                                empty_image(&stage.platform),
                                ctx.layers.clone(),
                                self.escape,
                            ),
                            key: key.finish(),
                            // The directory's layer has a history entry of its own, undated
                            // so that an unchanged rebuild keeps its image ID.
                            history: vec![History {
                                created_by: Some(format!("build context {name}")),
                                comment: Some(HISTORY_COMMENT.to_string()),
                                ..Default::default()
                            }],
                            history_mark: 1,
                            base: format!("context {name} {}", ctx.ident),
                            stage_name: None,
                            stage_idx: idx,
                            platform: stage.platform.clone(),
                        })
                    }
                }
            }
        }
    }

    /// A stage that starts from an image: its config, layers and history.
    fn image_base(
        &self,
        name: &str,
        rec: &crate::store::ImageRecord,
        idx: usize,
        epoch: Option<&str>,
        location: Location,
    ) -> Result<StageResult, BuildError> {
        let bytes = self.store.read_blob(&rec.id, "image config", 16 << 20)?;
        let mut spec = ImageSpec::from_slice(&bytes).map_err(|source| BuildError::BaseConfig {
            name: name.to_string(),
            source,
            location,
        })?;
        let layers = image_layers(rec);
        // The stage's platform; a base of another one (allowed, with a warning, when no
        // platform was asked for) makes the stage that platform's, as Docker does.
        let stage = &self.plan.stages[idx];
        let platform = match rec.platform() {
            Some(p) if !stage.platform_given => p,
            _ => stage.platform.clone(),
        };
        let platform = &platform;
        let mut key = KeyBuilder::new("image");
        key.text("manifest", rec.manifest_digest.as_str())
            .opt("source-date-epoch", epoch)
            .text("platform", &platform.to_string());
        // The stage's history is kept beside the config and written into it last.
        let history = std::mem::take(&mut spec.history);
        Ok(StageResult {
            state: StageState::new(spec, layers, self.escape),
            key: key.finish(),
            history_mark: history.len(),
            history,
            base: format!("{name}@{}", rec.manifest_digest),
            stage_name: None,
            stage_idx: idx,
            platform: platform.clone(),
        })
    }

    /// A stage: its base → its ops (the base's ONBUILD triggers first) → each op as a step
    /// (metadata runs looked up together) → the result.
    fn build_stage(
        &self,
        idx: usize,
        results: &BTreeMap<usize, StageResult>,
    ) -> Result<StageResult, BuildError> {
        let mut cur = self.base_state(idx, results)?;
        let stage = &self.plan.stages[idx];
        cur.stage_name = stage.name.clone();
        cur.stage_idx = idx;
        let ops = self.stage_ops(&mut cur, idx)?;
        // Triggers count among the stage's steps, so `[p 2/4]` numbers stay in range.
        let total = ops.len() + 1;
        let label = match &stage.name {
            Some(n) => n.clone(),
            None => format!("stage-{idx}"),
        };
        let from_id = self.next_id();
        self.progress.event(BuildEvent::Step {
            id: from_id,
            stage: format!("{label} 1/{total}"),
            text: stage.code.clone(),
        });
        let place = format!("{label} 1/{total}");
        self.debug
            .begin(from_id, &label, place, &stage.code, &cur.state);
        self.debug.finish(from_id, &cur.state);
        self.progress.event(BuildEvent::Done {
            id: from_id,
            seconds: 0.0,
        });
        let mut pending: Option<PendingMeta> = None;
        for (n, op) in ops.iter().enumerate() {
            if self
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst))
            {
                return Err(BuildError::Cancelled {
                    location: op.location,
                });
            }
            let id = self.next_id();
            let started = Instant::now();
            let place = format!("{label} {}/{total}", n + 2);
            self.debug
                .begin(id, &label, place.clone(), &op.code, &cur.state);
            self.progress.event(BuildEvent::Step {
                id,
                stage: place,
                text: op.code.clone(),
            });
            let position = format!("{idx}/{n}");
            let done = {
                // Once the step's keys are recorded (or it failed, or panicked), other builds
                // waiting for them look them up again.
                let _landing = self.shared.flights.landing();
                match &op.kind {
                    OpKind::Meta(m) => self.meta_step(id, &mut cur, op, m, &position, &mut pending),
                    OpKind::Run(r) => {
                        self.flush_meta(&mut cur, &mut pending);
                        self.run_step(id, &mut cur, op, r, results, &position)
                    }
                    OpKind::Copy(c) => {
                        self.flush_meta(&mut cur, &mut pending);
                        self.copy_step(id, &mut cur, op, c, results, &position)
                    }
                }
            };
            done?;
            self.debug.finish(id, &cur.state);
            self.progress.event(BuildEvent::Done {
                id,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        let _landing = self.shared.flights.landing();
        self.flush_meta(&mut cur, &mut pending);
        Ok(cur)
    }

    /// The ops a stage runs: the ONBUILD triggers of its base (an image, or a stage of this
    /// Dockerfile, as in BuildKit), lowered by the planner now that the base is read and then
    /// dropped from the image, then the stage's own.
    fn stage_ops(&self, cur: &mut StageResult, idx: usize) -> Result<Vec<Op>, BuildError> {
        let stage = &self.plan.stages[idx];
        let mut ops = match cur.state.spec.config.on_build.take() {
            Some(triggers) => self
                .plan
                .scope
                .lower_triggers(&triggers)
                .map_err(|e| match e {
                    TriggerError::Parse(e) => BuildError::Parse(e),
                    source => BuildError::Trigger {
                        source: Box::new(source),
                        location: stage.location,
                    },
                })?,
            None => Vec::new(),
        };
        ops.extend(stage.ops.iter().cloned());
        Ok(ops)
    }

    /// A metadata step: applied to the config, keyed by its parent's key and what it changed
    /// (the expanded values it set), which together determine the config: never the whole
    /// config, which would make n metadata lines cost O(n²). Looked up with the run of
    /// metadata steps it belongs to (see [`Builder::flush_meta`]); WORKDIR also makes its
    /// directory.
    fn meta_step(
        &self,
        id: usize,
        cur: &mut StageResult,
        op: &Op,
        m: &MetaOp,
        position: &str,
        pending: &mut Option<PendingMeta>,
    ) -> Result<(), BuildError> {
        let applied = meta::apply(&mut cur.state, m).map_err(BuildError::at(op.location))?;
        let mut key = KeyBuilder::new("meta");
        key.text("parent", cur.key.as_str())
            .text("instruction", op.name);
        applied.key_fields(&mut key);
        let parent = std::mem::replace(&mut cur.key, key.finish());
        self.note_meta_step(id, &op.code, &format!("{position}/meta"), &cur.key, parent);
        let workdir = matches!(m, MetaOp::Workdir(_));
        if workdir {
            self.flush_meta(cur, pending);
            self.workdir_step(cur, op.location, &format!("{position}/workdir"))?;
        }
        let start = cur.history.len();
        // BuildKit records no history entry for ONBUILD.
        if !matches!(m, MetaOp::Onbuild(_)) {
            cur.history.push(History {
                created: Some(self.created.clone()),
                created_by: Some(applied.created_by),
                comment: Some(HISTORY_COMMENT.to_string()),
                // WORKDIR's mkdir is always a layer (an empty one over an existing
                // directory), as in BuildKit's images.
                empty_layer: !workdir,
                ..Default::default()
            });
        }
        let run = pending.get_or_insert_with(|| PendingMeta {
            start,
            key: cur.key.clone(),
            position: String::new(),
            code: String::new(),
        });
        run.key = cur.key.clone();
        run.position = position.to_string();
        run.code = op.code.clone();
        Ok(())
    }

    /// Looks up (or records) a run of consecutive metadata steps as one cache entry, under
    /// the key of its last step (which chains on every step of the run): the record keeps
    /// the run's history entries, so a rebuild keeps their times and an unchanged build
    /// gives the same image ID. One record per run, not per step: 3,000 ENV lines write one
    /// file, not 3,000.
    fn flush_meta(&self, cur: &mut StageResult, pending: &mut Option<PendingMeta>) {
        let Some(run) = pending.take() else { return };
        let fresh = cur.history.split_off(run.start.min(cur.history.len()));
        let code = run.code;
        let mut describe = || BTreeMap::from([("instruction".to_string(), code.clone())]);
        let hit = self.lookup(None, &run.position, &run.key, &mut describe, cur);
        if hit && cur.history.len() == run.start + fresh.len() {
            // The times are the record's; the texts are this build's (an ARG's value is not
            // in the key).
            for (h, f) in cur.history[run.start..].iter_mut().zip(fresh) {
                h.created_by = f.created_by;
            }
        } else {
            cur.history.truncate(run.start);
            cur.history.extend(fresh);
            // The lookup marked the run's start: the record keeps the run's entries.
            self.remember(&run.key, cur, BTreeMap::new());
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
                    lookup::resolve_owner(merged, &user).map_err(WriteError::Owner)?
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
        .map_err(BuildError::at::<FsError>(location))?;
        r.map_err(|e| BuildError::at::<CopyError>(location)(e.into()))?;
        if let Some(l) = layer {
            cur.state.layers.push(l);
        }
        self.settle_key(&key, cur);
        self.remember(&key, cur, BTreeMap::new());
        Ok(())
    }
}

/// BuildKit's empty image for `platform`: WorkingDir "/" (and the default PATH, which
/// `base_state` adds to every stage without one).
fn empty_image(platform: &crate::common::platform::Platform) -> ImageSpec {
    let mut spec = ImageSpec {
        config: crate::image::spec::RunConfig {
            working_dir: "/".to_string(),
            ..Default::default()
        },
        ..ImageSpec::scratch()
    };
    super::set_platform(&mut spec, platform);
    spec
}
