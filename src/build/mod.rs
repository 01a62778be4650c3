//! `kiln build`: runs a plan's stages step by step against the store and the cache, and
//! stores the target stage's result as an image.

mod copystep;
pub mod debugshell;
mod direct;
pub mod error;
pub mod meta;
mod mountsrc;
pub mod multi;
pub mod named;
mod record;
mod remote;
mod runmounts;
mod runstep;
mod stage;
pub mod state;

pub use error::BuildError;
pub use named::{parse_build_context, NamedContext};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::cache::{CacheIndex, LayerRef};
use crate::common::platform::Platform;
use crate::image::config::{
    canonical_json, descriptor, new_manifest, MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER,
};
use crate::image::spec::History;
use crate::image::{Digest, Reference};
use crate::planner::Location;
use crate::planner::{self, Base, Plan, PlanOptions};
use crate::store::Store;

use multi::Shared;
use state::StageState;

/// History comment of every step kiln records.
pub const HISTORY_COMMENT: &str = "kiln.dockerfile.v0";

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// The build context directory (read in place).
    pub context_dir: PathBuf,
    /// The Dockerfile's bytes.
    pub dockerfile: Vec<u8>,
    /// The Dockerfile's name, for messages.
    pub dockerfile_name: String,
    /// `-t` names.
    pub tags: Vec<Reference>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--label` values added to the final image.
    pub labels: BTreeMap<String, String>,
    /// `SOURCE_DATE_EPOCH`: fixes `created` times for reproducible images.
    pub source_date_epoch: Option<i64>,
    /// `.dockerignore` rules for the context.
    pub ignore: crate::context::IgnoreRules,
    /// `--network`: the network of RUN steps without a `--network` of their own (by default a
    /// namespace of their own with outbound access only, see [`crate::executor::NetworkMode`]).
    pub network: crate::executor::NetworkMode,
    /// `--allow network.host`: `RUN --network=host` may run (BuildKit's `network.host`
    /// entitlement; `--network host` grants it too).
    pub allow_network_host: bool,
    /// `--add-host`: `(name, address)` lines in RUN steps' `/etc/hosts` (not in the cache
    /// key, as BuildKit's).
    pub extra_hosts: Vec<(String, String)>,
    /// Set from a signal handler to stop running steps (Ctrl-C).
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// `--explain`: report every input of every step's cache key.
    pub explain: bool,
    /// `--secret` values by id, for `RUN --mount=type=secret`.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// `--ssh` agent sockets by id, for `RUN --mount=type=ssh`.
    pub ssh: BTreeMap<String, PathBuf>,
    /// `--no-cache-filter`: stages (by name) whose steps never use the cache.
    pub no_cache_filter: Vec<String>,
    /// Where each RUN step's full output is written (`step-<n>.log`), if anywhere.
    pub logs_dir: Option<PathBuf>,
    /// `--cache-to`: where this build's cache records and layers are exported.
    pub cache_to: Vec<crate::cache::transfer::CacheTo>,
    /// `--cache-from`: exported caches whose records this build may use.
    pub cache_from: Vec<crate::cache::transfer::CacheFrom>,
    /// Whether `FROM` and `COPY --from` images are fetched from their registry.
    pub pull: PullPolicy,
    /// `--build-context`: named contexts by normalized name (see
    /// [`crate::planner::context_name`]), which `FROM`, `COPY --from` and
    /// `RUN --mount=from=` use before any image of that name.
    pub contexts: BTreeMap<String, NamedContext>,
    /// `--shm-size`: bytes of RUN steps' `/dev/shm` (`None`: Docker's 64 MiB).
    pub shm_size: Option<u64>,
    /// `--ulimit`: RUN steps' resource limits (each checked to be at most kiln's own).
    pub ulimits: Vec<crate::executor::rlimit::Ulimit>,
    /// `--platform`: the platform to build for (`None`: the host's). Base images are
    /// resolved for it, RUN steps of a foreign platform run under binfmt_misc emulation, and
    /// the image's config names it.
    pub platform: Option<crate::common::platform::Platform>,
    /// Where binfmt_misc registrations are read (`None`: [`crate::executor::binfmt::dir`]).
    pub binfmt_dir: Option<PathBuf>,
}

/// Something that happened during a build, for the progress display.
#[derive(Debug, Clone, PartialEq)]
pub enum BuildEvent {
    /// A step starts (`id` numbers steps from 1 across the build).
    Step {
        /// Step number.
        id: usize,
        /// `[stage 2/5]`-style label.
        stage: String,
        /// The instruction text.
        text: String,
    },
    /// A step was answered from the cache.
    Cached {
        /// Step number.
        id: usize,
        /// The `--cache-from` cache that answered, when not the local one.
        from: Option<String>,
    },
    /// A step missed the cache, and why.
    Miss {
        /// Step number.
        id: usize,
        /// The first input that differs from the previous build, in words.
        reason: String,
    },
    /// `--explain`: every input of a step's key next to the previous build's.
    Explain {
        /// Step number.
        id: usize,
        /// One line per input; changed ones start with `≠`.
        lines: Vec<String>,
    },
    /// A step finished.
    Done {
        /// Step number.
        id: usize,
        /// Seconds it took.
        seconds: f64,
    },
    /// Output of a running step.
    Output {
        /// Step number.
        id: usize,
        /// The text, as produced.
        text: String,
    },
    /// A warning for the user.
    Warning(String),
}

/// When a base image (`FROM`, `COPY --from`) is fetched from its registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Never: the image must be in the store.
    #[default]
    Never,
    /// When the store does not have it (`kiln build`'s default).
    Missing,
    /// Always, so a moved tag is followed (layers already stored are not fetched again).
    Always,
}

/// Receives build events.
pub trait Progress: Sync {
    /// Handle one event.
    fn event(&self, e: BuildEvent);
}

/// The image a build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// Image ID (config digest).
    pub image_id: Digest,
    /// Manifest digest.
    pub manifest_digest: Digest,
    /// Warnings given during the build.
    pub warnings: Vec<String>,
    /// `--cache-to`: each destination, and what was written there.
    pub cache_exports: Vec<(String, crate::cache::transfer::ExportReport)>,
}

/// A finished stage: its state and the cache key of its last step.
#[derive(Debug, Clone)]
struct StageResult {
    state: StageState,
    key: Digest,
    history: Vec<History>,
    /// Where the current step's history entries start (set by its cache lookup).
    history_mark: usize,
    /// What the stage started from (image name and digest, or a stage), a cache-key input.
    base: String,
    /// The stage being built (its `AS` name), for `--no-cache-filter`.
    stage_name: Option<String>,
    /// The stage being built (its index in the plan), for `--cache-to mode=min`.
    stage_idx: usize,
    /// The platform the stage's files are for: what its RUN steps run as.
    platform: crate::common::platform::Platform,
}

/// Consecutive metadata steps not yet looked up in the cache (see [`Builder::flush_meta`]).
struct PendingMeta {
    /// Where the run's history entries start.
    start: usize,
    /// The key of its last step.
    key: Digest,
    /// The position of its last step.
    position: String,
    /// The instruction of its last step.
    code: String,
}

/// One step of this build's record: the previous build's record of the same step (when its
/// key is unchanged, so the inputs are too) or new inputs.
/// A metadata step as a later miss reason names it.
#[derive(Debug, Clone)]
struct MetaOrigin {
    id: usize,
    code: String,
    /// Its place in the build record (`stage/step/meta`).
    position: String,
    /// The key before it.
    parent: String,
}

enum Recorded {
    /// Index into the previous record's steps.
    Previous(usize),
    /// Inputs described in this build.
    New(crate::cache::explain::StepInputs),
}

struct Builder<'a> {
    store: &'a Store,
    cache: CacheIndex,
    /// What the builds of one command share (the context, step numbers, pulls, steps in
    /// flight).
    shared: &'a Shared,
    cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    req: &'a BuildRequest,
    plan: Plan,
    progress: &'a dyn Progress,
    escape: char,
    created: String,
    /// The inputs of this build's steps, and the previous build's, for miss reasons.
    record: std::sync::Mutex<Vec<Recorded>>,
    previous: Option<crate::cache::explain::BuildRecord>,
    /// Step numbers by key, to name a parent step that rebuilt.
    key_ids: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// Every metadata step of this build by the key it left: which step it was and the key
    /// before it, so a miss below it can name the metadata step that changed.
    meta_steps: std::sync::Mutex<std::collections::HashMap<String, MetaOrigin>>,
    /// The `--cache-from` caches.
    imported: std::sync::Arc<crate::cache::transfer::ImportedCache>,
    /// Warnings given while steps run (an imported layer refused).
    warnings: std::sync::Mutex<Vec<String>>,
    /// The key of every step that ended with a cache record (hit or recorded), by stage, for
    /// `--cache-to`.
    used_keys: std::sync::Mutex<Vec<(usize, Digest)>>,
    /// Named contexts resolved by this build, by name.
    named: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<named::Resolved>>>,
    /// Removals of finished steps' scratch directories, off the steps' critical path;
    /// joined before the build returns.
    cleanup: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// The network namespaces (each with its pasta) RUN steps of the default network join,
    /// made on first use; closed once the stages are done, on success, error or Ctrl-C alike
    /// (and when the builder is dropped, on a panic).
    netpool: crate::executor::pasta::NetPool,
    /// Every step's snapshot, environment and mounts, for `kiln debug shell`.
    debug: debugshell::Recorder,
}

fn rfc3339(secs: i64) -> String {
    crate::common::time::Timestamp::from_secs(secs).to_rfc3339_secs()
}

/// Build the request's Dockerfile into `store`: plan it → check the cache destinations →
/// run the stages → commit the target's image → export the cache.
pub fn build(
    store: &Store,
    req: &BuildRequest,
    progress: &dyn Progress,
) -> Result<BuildResult, BuildError> {
    let shared = Shared::default();
    let result = build_with(store, req, progress, &shared, Commit::Tagged);
    shared.finish();
    result
}

/// How a build stores its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// Recorded in `index.json` under the request's tags.
    Tagged,
    /// Blobs only: one platform's image of an index ([`multi`]).
    Platform,
}

/// [`build`] with what it shares with the other platforms' builds of one command.
fn build_with(
    store: &Store,
    req: &BuildRequest,
    progress: &dyn Progress,
    shared: &Shared,
    commit: Commit,
) -> Result<BuildResult, BuildError> {
    let df = crate::planner::parse_bytes(&req.dockerfile)?;
    let plan = planner::plan(
        &df,
        &PlanOptions {
            build_args: req.build_args.clone(),
            target: req.target.clone(),
            contexts: req.contexts.keys().cloned().collect(),
            platform: req.platform.clone(),
        },
    )?;
    // A destination that cannot be written to is refused before anything is built.
    for to in &req.cache_to {
        to.sink(req.cancel.as_ref())?;
    }
    for from in &req.cache_from {
        from.source(req.cancel.as_ref())?;
    }
    let mut warnings = Vec::new();
    if !plan.unused_build_args.is_empty() {
        let w = format!(
            "One or more build-args [{}] were not consumed",
            plan.unused_build_args.join(" ")
        );
        progress.event(BuildEvent::Warning(w.clone()));
        warnings.push(w);
    }
    let record_path = record_path(store, req, commit);
    // A build of several platforms loads the `--cache-from` caches once, for all of them.
    let imported = match &shared.imported {
        Some(imported) => imported.clone(),
        None => std::sync::Arc::new(crate::cache::transfer::ImportedCache::load(
            &req.cache_from,
            req.cancel.as_ref(),
            &mut |w: String| {
                progress.event(BuildEvent::Warning(w.clone()));
                warnings.push(w);
            },
        )),
    };
    let mut b = Builder::new(
        store,
        req,
        plan,
        progress,
        df.escape,
        imported,
        &record_path,
        shared,
    );
    let results = b.run_stages();
    b.debug.save(store);
    // Reaped by the time this returns (`_closing` is dropped before `b`).
    let _closing = b.wind_down(&record_path);
    let mut results = results?;
    let target = results
        .remove(&b.plan.target)
        .expect("the target is the last stage in the order");
    let (image_id, manifest_digest) = b.commit_image(target, commit)?;
    let cache_exports = match commit {
        Commit::Tagged => req
            .cache_to
            .iter()
            .map(|to| b.export_cache(to))
            .collect::<Result<Vec<_>, _>>()?,
        // A build of several platforms exports once, every platform's records together.
        Commit::Platform => {
            let records = req.cache_to.iter().map(|to| b.cache_records(to.mode()));
            shared.keep_cache_records(req.platform.as_ref(), records.collect());
            Vec::new()
        }
    };
    warnings.extend(
        b.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..),
    );
    Ok(BuildResult {
        image_id,
        manifest_digest,
        warnings,
        cache_exports,
    })
}

/// Writes `records` and the layers they name to `to`, one of `req`'s `--cache-to`
/// destinations; returns the destination as shown and what was written.
fn export_records(
    store: &Store,
    req: &BuildRequest,
    to: &crate::cache::transfer::CacheTo,
    records: &[crate::cache::CacheRecord],
) -> Result<(String, crate::cache::transfer::ExportReport), BuildError> {
    use crate::cache::transfer::{self, CacheArtifact};
    let sink = to.sink(req.cancel.as_ref())?;
    let artifact = CacheArtifact::new(store, records, to.mode(), &*sink)?;
    let report = transfer::export(store, &artifact, &*sink)?;
    tracing::info!(
        cache = %sink.describe(),
        records = report.records,
        written = report.written,
        skipped = report.skipped,
        "exported the build cache"
    );
    Ok((sink.describe(), report))
}

/// Where this build's record of step inputs is kept: one per context, Dockerfile and target.
fn record_path(store: &Store, req: &BuildRequest, commit: Commit) -> PathBuf {
    use sha2::{Digest as _, Sha256};
    let abs = std::fs::canonicalize(&req.context_dir).unwrap_or_else(|_| req.context_dir.clone());
    let mut h = Sha256::new();
    // A context from standard input has a new directory each time: such builds share one
    // record (per Dockerfile name and target), so the next one can still say what changed.
    if record::is_ephemeral(store, &req.context_dir) {
        h.update(b"<ephemeral context>");
    } else {
        h.update(abs.as_os_str().as_encoded_bytes());
    }
    h.update([0]);
    h.update(req.dockerfile_name.as_bytes());
    h.update([0]);
    h.update(req.target.as_deref().unwrap_or("").as_bytes());
    // Each platform of a multi-platform build keeps its own record (a build of one platform
    // keeps the one record, so its next build can say the platform changed).
    if let (Commit::Platform, Some(p)) = (commit, &req.platform) {
        h.update([0]);
        h.update(p.to_string().as_bytes());
    }
    let id: [u8; 32] = h.finalize().into();
    crate::cache::explain::record_path(
        &store
            .root()
            .join("cache")
            .join(format!("v{}", crate::cache::CACHE_VERSION)),
        &crate::context::hex(&id),
    )
}

impl<'a> Builder<'a> {
    // The parts of one build, each used once here.
    #[allow(clippy::too_many_arguments)]
    fn new(
        store: &'a Store,
        req: &'a BuildRequest,
        plan: Plan,
        progress: &'a dyn Progress,
        escape: char,
        imported: std::sync::Arc<crate::cache::transfer::ImportedCache>,
        record_path: &std::path::Path,
        shared: &'a Shared,
    ) -> Builder<'a> {
        let now = req.source_date_epoch.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
        Builder {
            store,
            cache: CacheIndex::open(store),
            shared,
            cancel: req.cancel.clone(),
            req,
            plan,
            progress,
            escape,
            created: rfc3339(now),
            record: Default::default(),
            previous: crate::cache::explain::load(record_path),
            key_ids: Default::default(),
            meta_steps: Default::default(),
            imported,
            warnings: Default::default(),
            used_keys: Default::default(),
            named: Default::default(),
            cleanup: Default::default(),
            netpool: crate::executor::pasta::NetPool::new(
                crate::executor::pasta::PastaOptions::sandbox(),
            ),
            debug: debugshell::Recorder::new(store, req.network, req.extra_hosts.clone()),
        }
    }

    /// Once no step runs any more, whichever way the stages ended: every pasta of the build
    /// killed (and reaped before the builder is dropped), scratch removals joined, the stat
    /// cache and the build record saved.
    #[must_use = "the pastas are reaped when the Closing is dropped"]
    fn wind_down(&mut self, record_path: &std::path::Path) -> crate::executor::pasta::Closing {
        let closing = self.netpool.close_later();
        self.wait_cleanup();
        self.save_record(record_path);
        // Freeing the previous record takes milliseconds: done on another thread, off the
        // way out of the build.
        let previous = self.previous.take();
        std::thread::spawn(move || drop(previous));
        closing
    }
}

impl Builder<'_> {
    /// A base image for `platform` from the store, pulled from its registry first as the
    /// request's [`PullPolicy`] says (once per build, name and platform). A stored image of
    /// another platform is refused when the platform was `given` (a name holds one platform
    /// in the store), and taken with a warning otherwise, as Docker does.
    fn image(
        &self,
        name: &str,
        (platform, given): (&Platform, bool),
        location: Location,
    ) -> Result<crate::store::ImageRecord, BuildError> {
        let check_platform = |name: &str, rec: &crate::store::ImageRecord, wanted, location| {
            match check_platform(name, rec, wanted, location) {
                Err(BuildError::BasePlatform { found, wanted, .. }) if !given => {
                    // BuildKit's InvalidBaseImagePlatform warning.
                    self.warn(format!(
                        "InvalidBaseImagePlatform: Base image {name} was pulled with platform \
                         {found}, expected {wanted} for current build"
                    ));
                    Ok(())
                }
                other => other,
            }
        };
        let policy = self.req.pull;
        let local = || {
            let rec = self
                .store
                .resolve_platform(name, Some(platform))
                .map_err(|_| BuildError::NoBaseImage {
                    name: name.to_string(),
                    location,
                })?;
            check_platform(name, &rec, platform, location)?;
            Ok(rec)
        };
        let reference = match crate::image::Reference::parse_normalized_named(name) {
            Ok(r) if policy != PullPolicy::Never => r,
            _ => return local(),
        };
        let mut pulled = self.shared.pulled.lock().unwrap_or_else(|p| p.into_inner());
        let pulled_as = format!("{name} {platform}");
        if let Some(r) = pulled.get(&pulled_as) {
            return Ok(r.clone());
        }
        if policy == PullPolicy::Missing {
            // A name holding an index of several platforms gives the stage's platform's.
            if let Ok(r) = self.store.resolve_platform(name, Some(platform)) {
                check_platform(name, &r, platform, location)?;
                return Ok(r);
            }
        }
        let id = self.next_id();
        let started = Instant::now();
        let shown = reference.clone().with_default_tag();
        self.progress.event(BuildEvent::Step {
            id,
            stage: "internal".into(),
            text: format!("pull {shown}"),
        });
        let mut opts = crate::registry::ClientOptions::from_env();
        opts.cancel = self.cancel.clone();
        let fail = |source: crate::registry::RegistryError| BuildError::Pull {
            name: name.to_string(),
            missing: policy == PullPolicy::Missing,
            source: Box::new(source),
            location,
        };
        let client = crate::registry::Client::new(reference.domain(), &opts).map_err(fail)?;
        let seen = std::sync::Mutex::new(std::collections::HashSet::new());
        let report = |layer: &str, status: crate::registry::pull::Status| {
            let text = format!("{layer}: {status}");
            let new = seen
                .lock()
                .map(|mut s| s.insert(text.clone()))
                .unwrap_or(false);
            if new {
                self.progress.event(BuildEvent::Output {
                    id,
                    text: format!("{text}\n"),
                });
            }
        };
        let result = crate::registry::pull::pull(
            self.store,
            &client,
            &shown,
            &crate::registry::pull::PullOptions {
                platform: Some(platform.clone()),
            },
            &report,
        )
        .map_err(fail)?;
        self.progress.event(BuildEvent::Output {
            id,
            text: format!("digest: {}\n", result.digest),
        });
        self.progress.event(BuildEvent::Done {
            id,
            seconds: started.elapsed().as_secs_f64(),
        });
        check_platform(name, &result.image, platform, location)?;
        pulled.insert(pulled_as, result.image.clone());
        Ok(result.image)
    }

    /// A warning about the build, shown with its progress and returned with its result.
    fn warn(&self, w: String) {
        self.progress.event(BuildEvent::Warning(w.clone()));
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(w);
    }

    /// Run `f` (removing a finished step's files) on a thread of its own.
    fn later(&self, f: impl FnOnce() + Send + 'static) {
        let mut jobs = self.cleanup.lock().unwrap_or_else(|p| p.into_inner());
        match std::thread::Builder::new()
            .name("kiln-cleanup".into())
            .spawn(f)
        {
            Ok(h) => jobs.push(h),
            Err(e) => tracing::warn!(error = %e, "cannot start a cleanup thread"),
        }
    }

    /// Wait for every removal [`Builder::later`] started.
    fn wait_cleanup(&self) {
        let jobs = std::mem::take(&mut *self.cleanup.lock().unwrap_or_else(|p| p.into_inner()));
        for j in jobs {
            let _ = j.join();
        }
    }

    fn next_id(&self) -> usize {
        self.shared
            .step_id
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }

    /// `--cache-to`: export the records of this build's steps (see [`Builder::cache_records`])
    /// and the layers they name.
    fn export_cache(
        &self,
        to: &crate::cache::transfer::CacheTo,
    ) -> Result<(String, crate::cache::transfer::ExportReport), BuildError> {
        let records = self.cache_records(to.mode());
        export_records(self.store, self.req, to, &records)
    }

    /// The records of this build's steps a `--cache-to` of `mode` exports: the final image's
    /// stages for `mode=min`, every stage built for `mode=max`.
    fn cache_records(
        &self,
        mode: crate::cache::transfer::CacheMode,
    ) -> Vec<crate::cache::CacheRecord> {
        use crate::cache::transfer::CacheMode;
        let mut stages = std::collections::BTreeSet::new();
        match mode {
            CacheMode::Max => stages.extend(self.plan.order.iter().copied()),
            CacheMode::Min => {
                let mut i = self.plan.target;
                stages.insert(i);
                while let Base::Stage(parent) = &self.plan.stages[i].base {
                    if !stages.insert(*parent) {
                        break;
                    }
                    i = *parent;
                }
            }
        }
        let used = self
            .used_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut seen = std::collections::BTreeSet::new();
        used.into_iter()
            .filter(|(stage, key)| stages.contains(stage) && seen.insert(key.clone()))
            .filter_map(|(_, key)| self.cache.get(&key))
            .collect()
    }

    fn commit_image(
        &self,
        mut r: StageResult,
        commit: Commit,
    ) -> Result<(Digest, Digest), BuildError> {
        let spec = &mut r.state.spec;
        // The image is for the platform its files are for: the target stage's.
        set_platform(spec, &r.platform);
        if !self.req.labels.is_empty() {
            let labels = spec.config.labels.get_or_insert_with(BTreeMap::new);
            labels.extend(self.req.labels.clone());
        }
        // SOURCE_DATE_EPOCH's time, whatever the base's history says; otherwise the newest
        // step's time: an image rebuilt entirely from the cache keeps its date. An image
        // with no history at all (a base without one, and only ONBUILD steps, which record
        // none) keeps the base's date, or none if the base has none, so that a rebuild
        // gives the same image too.
        spec.created = if self.req.source_date_epoch.is_some() {
            Some(self.created.clone())
        } else {
            r.history
                .iter()
                .filter_map(|h| h.created.clone())
                .max()
                .or_else(|| spec.created.clone())
        };
        spec.rootfs.diff_ids = r
            .state
            .layers
            .iter()
            .map(|l| l.diff_id.to_string())
            .collect();
        spec.history = r.history;
        let config = spec.to_bytes();
        let config_digest = Digest::of_bytes(&config);
        let _lease = self.store.lease()?;
        self.store.put_blob_bytes(&config, Some(&config_digest))?;
        let layers = r
            .state
            .layers
            .iter()
            .map(|l| descriptor(MEDIA_TYPE_LAYER, &l.diff_id, l.size))
            .collect();
        let manifest = new_manifest(
            descriptor(MEDIA_TYPE_CONFIG, &config_digest, config.len() as u64),
            layers,
        );
        let manifest_bytes = canonical_json("manifest", &manifest).map_err(BuildError::Manifest)?;
        self.store.put_blob_bytes(&manifest_bytes, None)?;
        let rec = match commit {
            Commit::Tagged => {
                self.store
                    .put_image_tagged(&config, &manifest_bytes, &self.req.tags)?
            }
            Commit::Platform => self.store.put_platform_image(&config, &manifest_bytes)?,
        };
        Ok((rec.id, rec.manifest_digest))
    }
}

/// Records `platform` in an image config (`os`, `architecture`, `variant`).
pub(crate) fn set_platform(spec: &mut crate::image::spec::ImageSpec, platform: &Platform) {
    spec.os = platform.os.clone();
    spec.architecture = platform.architecture.clone();
    spec.variant = platform.variant.clone();
}

/// Refuses a stored image whose config names another platform than `wanted`.
fn check_platform(
    name: &str,
    rec: &crate::store::ImageRecord,
    wanted: &Platform,
    location: Location,
) -> Result<(), BuildError> {
    use crate::imageops::platform::suits;
    match rec.platform() {
        Some(found) if !suits(rec, wanted) => Err(BuildError::BasePlatform {
            name: name.to_string(),
            found: found.to_string(),
            wanted: wanted.to_string(),
            location,
        }),
        _ => Ok(()),
    }
}

/// The layers of a stored image, bottom first.
pub(crate) fn image_layers(rec: &crate::store::ImageRecord) -> Vec<LayerRef> {
    rec.manifest
        .layers()
        .iter()
        .zip(&rec.diff_ids)
        .map(|(l, d)| LayerRef {
            diff_id: d.clone(),
            size: l.size(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::testutil::Events;
    use super::*;
    use crate::image::spec::ImageSpec;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    // Regression: RUN --mount values were parsed when the step ran, after the steps before
    // it; the planner refuses a bad one before any step starts.
    #[test]
    fn a_bad_mount_is_refused_before_any_step_runs() {
        use crate::planner::ops::{OpError, RunFlagError};
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path().join("root")).unwrap();
        let req = BuildRequest {
            context_dir: d.path().to_path_buf(),
            dockerfile: b"FROM scratch\nENV A=1\nRUN --mount=type=cache,size=1m,target=/c true\n"
                .to_vec(),
            dockerfile_name: "Dockerfile".into(),
            ..Default::default()
        };
        let events = Events::default();
        let e = build(&store, &req, &events).unwrap_err();
        assert!(
            matches!(
                &e,
                BuildError::Plan(planner::PlanError::Op(OpError::Mount {
                    source: RunFlagError::KeyNotForType { .. },
                    ..
                }))
            ),
            "{e:?}"
        );
        assert_eq!(e.location().map(|l| l.line), Some(3));
        let started = events
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, BuildEvent::Step { .. }));
        assert!(!started, "a step started before the refusal");
    }

    // Regression: an image with no history (a base without one, then only ONBUILD steps,
    // which record none) was dated at build time, so each unchanged rebuild gave a new ID.
    #[test]
    fn an_image_without_history_keeps_the_bases_date() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path().join("root")).unwrap();
        let mut base = ImageSpec::scratch();
        base.created = Some("2020-01-02T03:04:05Z".to_string());
        let config = base.to_bytes();
        let cd = Digest::of_bytes(&config);
        let _lease = store.lease().unwrap();
        store.put_blob_bytes(&config, Some(&cd)).unwrap();
        let manifest = new_manifest(
            descriptor(MEDIA_TYPE_CONFIG, &cd, config.len() as u64),
            vec![],
        );
        let mb = canonical_json("manifest", &manifest).unwrap();
        store.put_blob_bytes(&mb, None).unwrap();
        store
            .put_image_tagged(
                &config,
                &mb,
                &[Reference::parse("kiln-test/nohist:1").unwrap()],
            )
            .unwrap();
        let req = BuildRequest {
            context_dir: d.path().to_path_buf(),
            dockerfile: b"FROM kiln-test/nohist:1\nONBUILD RUN touch /t\n".to_vec(),
            dockerfile_name: "Dockerfile".into(),
            tags: vec![Reference::parse("kiln-test/onbuild:1").unwrap()],
            ..Default::default()
        };
        let r = build(&store, &req, &Events::default()).unwrap();
        let spec = ImageSpec::from_slice(&store.read_blob(&r.image_id, "config", 1 << 20).unwrap())
            .unwrap();
        assert!(spec.history.is_empty());
        assert_eq!(spec.created.as_deref(), Some("2020-01-02T03:04:05Z"));

        // A base without a date gives an image without one, not the build's time.
        let undated = ImageSpec::scratch().to_bytes();
        let cd = Digest::of_bytes(&undated);
        store.put_blob_bytes(&undated, Some(&cd)).unwrap();
        let manifest = new_manifest(
            descriptor(MEDIA_TYPE_CONFIG, &cd, undated.len() as u64),
            vec![],
        );
        let mb = canonical_json("manifest", &manifest).unwrap();
        store.put_blob_bytes(&mb, None).unwrap();
        store
            .put_image_tagged(
                &undated,
                &mb,
                &[Reference::parse("kiln-test/nohist:1").unwrap()],
            )
            .unwrap();
        let r = build(&store, &req, &Events::default()).unwrap();
        let spec = ImageSpec::from_slice(&store.read_blob(&r.image_id, "config", 1 << 20).unwrap())
            .unwrap();
        assert_eq!(spec.created, None);
    }

    #[test]
    fn metadata_only_build_from_scratch_is_reproducible() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path().join("root")).unwrap();
        let req = BuildRequest {
            context_dir: d.path().to_path_buf(),
            dockerfile: b"FROM scratch AS base\nENV A=1\nFROM base\nARG V=2\nLABEL v=$V a=$A\nCMD [\"/app\"]\n"
                .to_vec(),
            dockerfile_name: "Dockerfile".into(),
            tags: vec![Reference::parse("kiln-test/meta:1").unwrap()],
            source_date_epoch: Some(1_700_000_000),
            ..Default::default()
        };
        let events = Events::default();
        let r1 = build(&store, &req, &events).unwrap();
        let rec = store.resolve("kiln-test/meta:1").unwrap();
        assert_eq!(rec.id, r1.image_id);
        let spec =
            ImageSpec::from_slice(&store.read_blob(&rec.id, "config", 1 << 20).unwrap()).unwrap();
        // BuildKit's empty image starts with the default PATH.
        assert_eq!(
            spec.config.env,
            vec![
                format!("PATH={}", crate::executor::DEFAULT_PATH),
                "A=1".to_string()
            ]
        );
        assert_eq!(spec.config.labels.unwrap()["v"], "2");
        assert_eq!(spec.config.cmd, Some(vec!["/app".to_string()]));
        assert_eq!(spec.created.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert!(spec.history.iter().all(|h| h.empty_layer));
        assert_eq!(spec.history.len(), 4);

        let other = Store::open(d.path().join("root2")).unwrap();
        let r2 = build(&other, &req, &events).unwrap();
        assert_eq!(r2.image_id, r1.image_id);
        assert_eq!(r2.manifest_digest, r1.manifest_digest);
    }
}

#[cfg(test)]
mod fs_tests {
    use super::testutil::{unpack, Events};
    use super::*;
    use std::fs;

    #[test]
    fn copy_from_context_and_stages_with_cache() {
        if !crate::testutil::require(nix::unistd::geteuid().is_root(), "root (overlayfs)") {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let ctx = d.path().join("ctx");
        fs::create_dir_all(ctx.join("files/sub")).unwrap();
        fs::write(ctx.join("files/a.txt"), b"A").unwrap();
        fs::write(ctx.join("files/sub/b.txt"), b"B").unwrap();
        fs::write(ctx.join("top.txt"), b"T").unwrap();
        fs::write(ctx.join("ignored.log"), b"L").unwrap();
        let store = Store::open(d.path().join("root")).unwrap();
        let df = "FROM scratch AS a\nCOPY files/ /data/\nCOPY top.txt *.log /data/\nWORKDIR /work\n\
                  FROM scratch\nARG X=there\nCOPY --from=a /data /copied\nCOPY <<EOF /hello.txt\nhi $X\nEOF\n";
        let req = BuildRequest {
            context_dir: ctx.clone(),
            dockerfile: df.as_bytes().to_vec(),
            dockerfile_name: "Dockerfile".into(),
            tags: vec![Reference::parse("kiln-test/copy:1").unwrap()],
            ignore: crate::context::IgnoreRules::parse(".dockerignore", "*.log\n").unwrap(),
            ..Default::default()
        };
        // Ignored files are not in the context: `*.log` matches nothing, which BuildKit
        // skips (a warning here) when another source matches.
        let ev = Events::default();
        build(&store, &req, &ev).unwrap();
        let warned = ev.0.lock().unwrap().iter().any(|e| {
            matches!(e, BuildEvent::Output { text, .. } if text.contains("\"*.log\" matches nothing"))
        });
        assert!(warned, "no warning for a pattern that matches nothing");
        let out = d.path().join("out-log");
        fs::create_dir(&out).unwrap();
        unpack(&store, "kiln-test/copy:1", &out);
        assert!(out.join("copied/top.txt").exists() && !out.join("copied/ignored.log").exists());

        let req = BuildRequest {
            dockerfile: df.replace(" *.log", "").into_bytes(),
            ..req
        };
        build(&store, &req, &ev).unwrap();
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        unpack(&store, "kiln-test/copy:1", &out);
        assert_eq!(fs::read(out.join("copied/a.txt")).unwrap(), b"A");
        assert_eq!(fs::read(out.join("copied/sub/b.txt")).unwrap(), b"B");
        assert_eq!(fs::read(out.join("copied/top.txt")).unwrap(), b"T");
        assert_eq!(fs::read(out.join("hello.txt")).unwrap(), b"hi there\n");
        assert!(
            !out.join("work").exists(),
            "the final stage does not have stage a's WORKDIR"
        );

        // A rebuild with nothing changed answers every filesystem step from the cache.
        let ev = Events::default();
        build(&store, &req, &ev).unwrap();
        let cached =
            ev.0.lock()
                .unwrap()
                .iter()
                .filter(|e| matches!(e, BuildEvent::Cached { .. }))
                .count();
        assert_eq!(cached, 4);

        // A content change misses from that COPY on.
        fs::write(ctx.join("files/a.txt"), b"Z").unwrap();
        let ev = Events::default();
        build(&store, &req, &ev).unwrap();
        let cached =
            ev.0.lock()
                .unwrap()
                .iter()
                .filter(|e| matches!(e, BuildEvent::Cached { .. }))
                .count();
        assert_eq!(cached, 0);
        let out2 = d.path().join("out2");
        fs::create_dir(&out2).unwrap();
        unpack(&store, "kiln-test/copy:1", &out2);
        assert_eq!(fs::read(out2.join("copied/a.txt")).unwrap(), b"Z");

        // COPY --from an image in the store.
        let req = BuildRequest {
            dockerfile: b"FROM scratch\nCOPY --from=kiln-test/copy:1 /hello.txt /h.txt\n".to_vec(),
            tags: vec![Reference::parse("kiln-test/copy:2").unwrap()],
            ..req
        };
        build(&store, &req, &Events::default()).unwrap();
        let out3 = d.path().join("out3");
        fs::create_dir(&out3).unwrap();
        unpack(&store, "kiln-test/copy:2", &out3);
        assert_eq!(fs::read(out3.join("h.txt")).unwrap(), b"hi there\n");
    }
}

/// Test helpers shared by the build tests: a busybox base image made from the host's static
/// busybox.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use crate::image::spec::ImageSpec;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::sync::Mutex;

    /// Collects a build's events.
    #[derive(Default)]
    pub struct Events(pub Mutex<Vec<BuildEvent>>);

    impl Progress for Events {
        fn event(&self, e: BuildEvent) {
            self.0.lock().unwrap().push(e);
        }
    }

    /// Apply an image's layers, in order, into `dir`.
    pub fn unpack(store: &Store, name: &str, dir: &std::path::Path) {
        let rec = store.resolve(name).unwrap();
        for d in &rec.diff_ids {
            let f = store.open_blob(d).unwrap();
            crate::archive::extract(std::io::BufReader::new(f), dir, &Default::default()).unwrap();
        }
    }

    /// Store a one-layer busybox image as `name`; `None` when the host has no static busybox.
    pub fn busybox_image(store: &Store, name: &str) -> Option<()> {
        let bb = std::path::Path::new("/bin/busybox");
        if !crate::testutil::busybox() {
            return None;
        }
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for dir in ["bin", "etc", "tmp", "root"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        fs::set_permissions(
            root.join("tmp"),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
        fs::copy(bb, root.join("bin/busybox")).unwrap();
        let list = std::process::Command::new(bb)
            .arg("--list")
            .output()
            .unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = symlink("busybox", root.join("bin").join(applet));
            }
        }
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(root.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
        let (tar, digest) =
            crate::archive::write_tree(root, Vec::new(), Default::default()).unwrap();
        let diff_id = Digest::parse(&digest.diff_id()).unwrap();
        let _lease = store.lease().unwrap();
        store.put_blob_bytes(&tar, Some(&diff_id)).unwrap();
        let mut spec = ImageSpec::scratch();
        spec.rootfs.diff_ids = vec![diff_id.to_string()];
        spec.config.env = vec![format!("PATH={}", state::DEFAULT_PATH)];
        spec.config.cmd = Some(vec!["sh".into()]);
        let config = spec.to_bytes();
        let cd = Digest::of_bytes(&config);
        store.put_blob_bytes(&config, Some(&cd)).unwrap();
        let manifest = new_manifest(
            descriptor(MEDIA_TYPE_CONFIG, &cd, config.len() as u64),
            vec![descriptor(MEDIA_TYPE_LAYER, &diff_id, tar.len() as u64)],
        );
        let mb = canonical_json("manifest", &manifest).unwrap();
        store.put_blob_bytes(&mb, None).unwrap();
        store
            .put_image_tagged(&config, &mb, &[Reference::parse(name).unwrap()])
            .unwrap();
        Some(())
    }
}

#[cfg(test)]
mod run_tests {
    use super::testutil::{unpack as files_of, Events};
    use super::*;
    use std::fs;

    #[test]
    fn run_steps_make_layers_whiteouts_and_fail_with_their_exit_code() {
        if !crate::testutil::require(nix::unistd::geteuid().is_root(), "root (RUN steps)") {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path().join("root")).unwrap();
        if testutil::busybox_image(&store, "busybox:local").is_none() {
            return;
        }
        let ctx = d.path().join("ctx");
        fs::create_dir_all(&ctx).unwrap();
        fs::write(ctx.join("in.txt"), b"from context").unwrap();
        let df = "FROM busybox:local\nARG WHO=kiln\nENV GREETING=hello\nWORKDIR /app\nCOPY in.txt .\n\
                  RUN echo \"$GREETING $WHO\" > out.txt && cat in.txt >> out.txt && echo step-output\n\
                  RUN rm /etc/group && mkdir -p /opt/d && touch /opt/d/x\n\
                  USER app\nRUN id -u > /tmp/uid\n";
        let req = BuildRequest {
            context_dir: ctx.clone(),
            dockerfile: df.as_bytes().to_vec(),
            dockerfile_name: "Dockerfile".into(),
            tags: vec![Reference::parse("kiln-test/run:1").unwrap()],
            ..Default::default()
        };
        let ev = Events::default();
        build(&store, &req, &ev).unwrap();
        let printed =
            ev.0.lock()
                .unwrap()
                .iter()
                .any(|e| matches!(e, BuildEvent::Output { text, .. } if text == "step-output"));
        assert!(printed, "step output is streamed");
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        files_of(&store, "kiln-test/run:1", &out);
        assert_eq!(
            fs::read_to_string(out.join("app/out.txt")).unwrap(),
            "hello kiln\nfrom context"
        );
        assert!(
            !out.join("etc/group").exists(),
            "a deleted base file is a whiteout"
        );
        assert!(out.join("opt/d/x").exists());
        assert_eq!(fs::read_to_string(out.join("tmp/uid")).unwrap(), "1000\n");

        // Nothing changed: every step is cached, no container starts.
        let ev = Events::default();
        build(&store, &req, &ev).unwrap();
        let cached =
            ev.0.lock()
                .unwrap()
                .iter()
                .filter(|e| matches!(e, BuildEvent::Cached { .. }))
                .count();
        assert_eq!(cached, 4);

        // A failing step reports its exit code and where it is.
        let req = BuildRequest {
            dockerfile: b"FROM busybox:local\nRUN exit 3\n".to_vec(),
            ..req
        };
        let e = build(&store, &req, &Events::default()).unwrap_err();
        assert!(matches!(e, BuildError::RunFailed { code: 3, .. }), "{e:?}");
        assert!(e.to_string().contains("exit code: 3"), "{e}");
        assert_eq!(e.location().unwrap().line, 2);
    }
}
