//! A build for several platforms at once (`--platform linux/amd64,linux/arm64`): one build
//! per platform, in parallel up to the number of cores, sharing the context scan, the step
//! numbers, the pulls and the steps in flight, each platform's steps shown with its name
//! (`[linux/arm64 build 2/3]`), and the images stored as one OCI index under the tags.
//!
//! Steps that have the same key for every platform (a `FROM --platform=$BUILDPLATFORM`
//! stage that reads no target ARG) run once: the first build to miss one runs it, and the
//! others wait for it and then find it in the cache ([`Flights`]).
//!
//! The build cache goes with the platforms as BuildKit's does: the `--cache-from` caches are
//! loaded once for every platform, and each `--cache-to` destination gets one export holding
//! the records of every platform's steps (see [`crate::cache::transfer::merge_records`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;

use super::{build_with, BuildError, BuildEvent, BuildRequest, BuildResult, Commit, Progress};
use crate::cache::transfer::{merge_records, ExportReport, ImportedCache};
use crate::cache::CacheRecord;
use crate::common::platform::Platform;
use crate::image::Digest;
use crate::store::Store;

/// The context and its stat cache, scanned on first use.
type Scanned = Option<(crate::context::Context, crate::context::StatCache)>;

/// What the builds of one command share.
#[derive(Default)]
pub(crate) struct Shared {
    /// The build context and its stat cache, scanned (and hashed) once for every stage and
    /// every platform.
    pub(crate) context: Mutex<Scanned>,
    /// Step numbers, unique across the platforms (the progress view tells steps by them).
    pub(crate) step_id: AtomicUsize,
    /// Base images pulled, by name and platform.
    pub(crate) pulled: Mutex<HashMap<String, crate::store::ImageRecord>>,
    /// Steps being run, by key.
    pub(crate) flights: Flights,
    /// The `--cache-from` caches, loaded once for every platform (`None`: each build loads
    /// its own, as a build of one platform does).
    pub(crate) imported: Option<Arc<ImportedCache>>,
    /// The records each platform's build leaves for the `--cache-to` exports, by platform:
    /// one list per destination, in the request's order.
    cache_records: Mutex<HashMap<String, Vec<Vec<CacheRecord>>>>,
}

impl Shared {
    /// A platform's build is over: `records` are its selection for each `--cache-to`
    /// destination, exported with the other platforms' once every build is over.
    pub(crate) fn keep_cache_records(
        &self,
        platform: Option<&Platform>,
        records: Vec<Vec<CacheRecord>>,
    ) {
        let name = platform.map(ToString::to_string).unwrap_or_default();
        self.cache_records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, records);
    }

    /// Once every build is over: the stat cache saved, the context's listing freed off the
    /// way out (that takes milliseconds for a big context).
    pub(crate) fn finish(&self) {
        let scanned = self
            .context
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((_, mut c)) = scanned {
            if let Err(e) = c.save() {
                tracing::warn!(error = %e, "cannot save the build context's stat cache");
            }
            std::thread::spawn(move || drop(c));
        }
    }
}

/// The keys of the steps being run, each by the thread running it.
#[derive(Default)]
pub(crate) struct Flights {
    running: Mutex<HashMap<String, ThreadId>>,
    landed: Condvar,
}

impl Flights {
    /// Before running the step `key` (it missed the cache): true when this thread is to run
    /// it (now marked as running); false once another thread that ran it has finished, so
    /// that the caller looks the key up again.
    pub(crate) fn take_off(&self, key: &Digest) -> bool {
        let me = std::thread::current().id();
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut waited = false;
        loop {
            match running.get(key.as_str()) {
                Some(owner) if *owner == me => return true,
                Some(_) => {
                    waited = true;
                    running = self.landed.wait(running).unwrap_or_else(|p| p.into_inner());
                }
                None if waited => return false,
                None => {
                    running.insert(key.to_string(), me);
                    return true;
                }
            }
        }
    }

    /// Frees the keys this thread ran when the returned guard drops: after a step, whether
    /// it was recorded, failed or panicked (a panic must not leave other builds waiting).
    pub(crate) fn landing(&self) -> Landing<'_> {
        Landing(self)
    }

    /// After a step (recorded or failed): the keys this thread ran are free.
    pub(crate) fn land(&self) {
        let me = std::thread::current().id();
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let before = running.len();
        running.retain(|_, owner| *owner != me);
        if running.len() != before {
            self.landed.notify_all();
        }
    }
}

/// See [`Flights::landing`].
pub(crate) struct Landing<'a>(&'a Flights);

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        self.0.land();
    }
}

/// Passes events on with each step's label prefixed by the platform, as BuildKit shows a
/// multi-platform build (`[linux/arm64 build 2/3] RUN …`).
struct Prefixed<'a> {
    inner: &'a dyn Progress,
    platform: String,
}

impl Progress for Prefixed<'_> {
    fn event(&self, e: BuildEvent) {
        match e {
            BuildEvent::Step { id, stage, text } => self.inner.event(BuildEvent::Step {
                id,
                stage: format!("{} {stage}", self.platform),
                text,
            }),
            other => self.inner.event(other),
        }
    }
}

/// The result of a build of several platforms.
#[derive(Debug, Clone)]
pub struct MultiBuildResult {
    /// The digest of the index naming every platform's image.
    pub index_digest: Digest,
    /// Each platform's image, in the order the platforms were given.
    pub images: Vec<(Platform, BuildResult)>,
    /// Warnings of every platform's build.
    pub warnings: Vec<String>,
    /// `--cache-to`: each destination, and what was written there (one export of every
    /// platform's records).
    pub cache_exports: Vec<(String, ExportReport)>,
}

/// Builds `req` for each of `platforms` (at least one; duplicates are one) and stores the
/// images as one OCI index under `req.tags`. `req.platform` is ignored. The first failing
/// platform's error is returned; nothing is tagged then.
pub fn build_platforms(
    store: &Store,
    req: &BuildRequest,
    platforms: &[Platform],
    progress: &dyn Progress,
) -> Result<MultiBuildResult, BuildError> {
    let mut unique: Vec<Platform> = Vec::new();
    for p in platforms.iter().map(Platform::normalized) {
        if !unique.contains(&p) {
            unique.push(p);
        }
    }
    let mut warnings = Vec::new();
    let shared = Shared {
        imported: Some(import_caches(req, progress, &mut warnings)?),
        ..Shared::default()
    };
    // The platforms' images are not named until the index is: the lease keeps them (and the
    // layers the cache records name) from a concurrent garbage collection.
    let _lease = store.lease()?;
    let results = run_parallel(store, req, &unique, progress, &shared);
    shared.finish();
    let mut images = Vec::new();
    for (p, r) in unique.into_iter().zip(results) {
        let r = r?;
        warnings.extend(r.warnings.iter().cloned());
        images.push((p, r));
    }
    let records = images
        .iter()
        .map(|(_, r)| store.image_blobs(&r.manifest_digest))
        .collect::<Result<Vec<_>, _>>()?;
    let bytes = crate::store::index_bytes(&records)?;
    let index = store.put_index_tagged(&bytes, &req.tags)?;
    let cache_exports = export_caches(store, req, &images, &shared)?;
    Ok(MultiBuildResult {
        index_digest: index.digest,
        images,
        warnings,
        cache_exports,
    })
}

/// The `--cache-from` caches, loaded once for every platform's build. A `--cache-to` or
/// `--cache-from` value that cannot be used is an error before anything is built; a cache
/// that cannot be read is a warning (once), and the build goes on without it, as for one
/// platform.
fn import_caches(
    req: &BuildRequest,
    progress: &dyn Progress,
    warnings: &mut Vec<String>,
) -> Result<Arc<ImportedCache>, BuildError> {
    for to in &req.cache_to {
        to.sink(req.cancel.as_ref())?;
    }
    for from in &req.cache_from {
        from.source(req.cancel.as_ref())?;
    }
    let imported = ImportedCache::load(&req.cache_from, req.cancel.as_ref(), &mut |w| {
        progress.event(BuildEvent::Warning(w.clone()));
        warnings.push(w);
    });
    Ok(Arc::new(imported))
}

/// `--cache-to`: one export per destination, of the records every platform's build kept
/// for it (a step the platforms share is one record).
fn export_caches(
    store: &Store,
    req: &BuildRequest,
    images: &[(Platform, BuildResult)],
    shared: &Shared,
) -> Result<Vec<(String, ExportReport)>, BuildError> {
    let mut kept = std::mem::take(
        &mut *shared
            .cache_records
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    let mut per_platform: Vec<Vec<Vec<CacheRecord>>> = images
        .iter()
        .map(|(p, _)| kept.remove(&p.to_string()).unwrap_or_default())
        .collect();
    req.cache_to
        .iter()
        .enumerate()
        .map(|(i, to)| {
            let lists = per_platform
                .iter_mut()
                .map(|lists| lists.get_mut(i).map(std::mem::take).unwrap_or_default());
            super::export_records(store, req, to, &merge_records(lists))
        })
        .collect()
}

/// Each platform's build, on at most as many threads as there are cores.
fn run_parallel(
    store: &Store,
    req: &BuildRequest,
    platforms: &[Platform],
    progress: &dyn Progress,
    shared: &Shared,
) -> Vec<Result<BuildResult, BuildError>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = cores.clamp(1, platforms.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<BuildResult, BuildError>>>> =
        Mutex::new(platforms.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(p) = platforms.get(i) else { break };
                let mut one = req.clone();
                one.platform = Some(p.clone());
                one.tags = Vec::new();
                let shown = Prefixed {
                    inner: progress,
                    platform: p.to_string(),
                };
                let r = build_with(store, &one, &shown, shared, Commit::Platform);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or(Err(BuildError::Panicked)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_in_flight_runs_once() {
        let flights = std::sync::Arc::new(Flights::default());
        let key = Digest::of_bytes(b"step");
        assert!(flights.take_off(&key));
        assert!(flights.take_off(&key), "the owner may ask again");
        let other = {
            let (flights, key) = (flights.clone(), key.clone());
            std::thread::spawn(move || flights.take_off(&key))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!other.is_finished(), "the second waits for the first");
        flights.land();
        assert!(!other.join().unwrap(), "and then looks the key up again");
        // Nobody runs it now (the first failed, say): the next one takes it.
        let again = {
            let (flights, key) = (flights.clone(), key.clone());
            std::thread::spawn(move || flights.take_off(&key))
        };
        assert!(again.join().unwrap());
    }
}
