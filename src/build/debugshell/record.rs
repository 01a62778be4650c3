//! The record `kiln debug shell` reads: every step of a build by the number its progress
//! printed, with the snapshot after it (or, for a failed RUN, before it plus the files it left),
//! its environment, user, directory, network and mounts.
//!
//! Each build writes `<root>/debug/build-<time>-<pid>/record-v1.json` when its stages end,
//! success or failure, then points `<root>/debug/last` at it (see [`super::Recorder`]). A RUN
//! step that fails leaves its upper dir there (`step-<N>-upper`) instead of deleting it: the
//! files as the step left them, kept until the next build in the store ends.
//!
//! A step's environment is stored as a change to the previous step's of its stage
//! ([`EnvDiff`]), so 3,000 ENV lines make a record linear in their number, not quadratic.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::LayerRef;
use crate::executor::NetworkMode;
use crate::store::Store;

use super::DebugShellError;

/// Version of the record's format, in its file name.
pub const RECORD_VERSION: u32 = 1;

pub(super) const RECORD_FILE: &str = "record-v1.json";
pub(super) const LAST_FILE: &str = "last";
pub(super) const DIR_PREFIX: &str = "build-";
/// Largest record kiln reads (a build of thousands of steps fits).
const MAX_RECORD: u64 = 64 << 20;

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// It started and never finished (the build failed elsewhere, or in it without a RUN's
    /// exit code: a COPY, a mount): the view is the state before it.
    NotFinished,
    /// It ran.
    Done,
    /// The cache answered it.
    Cached,
    /// Its command failed: the view is the state before it, plus the files it left.
    Failed {
        /// The command's exit code (128 + signal when killed).
        code: i32,
        /// The build's error.
        message: String,
    },
}

/// The network a step's sandbox had, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordedNetwork {
    /// A namespace of its own with outbound access.
    Sandbox,
    /// The host's.
    Host,
    /// Loopback only.
    None,
}

impl From<NetworkMode> for RecordedNetwork {
    fn from(n: NetworkMode) -> Self {
        match n {
            NetworkMode::Sandbox => RecordedNetwork::Sandbox,
            NetworkMode::Host => RecordedNetwork::Host,
            NetworkMode::None => RecordedNetwork::None,
        }
    }
}

impl From<RecordedNetwork> for NetworkMode {
    fn from(n: RecordedNetwork) -> Self {
        match n {
            RecordedNetwork::Sandbox => NetworkMode::Sandbox,
            RecordedNetwork::Host => NetworkMode::Host,
            RecordedNetwork::None => NetworkMode::None,
        }
    }
}

impl RecordedNetwork {
    /// The `--network` value that gives it.
    pub fn name(self) -> &'static str {
        match self {
            RecordedNetwork::Sandbox => "default",
            RecordedNetwork::Host => "host",
            RecordedNetwork::None => "none",
        }
    }
}

/// One `RUN --mount` of a step, as a debug shell makes it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum MountView {
    /// A cache directory of the store (the same one, not a copy).
    Cache {
        /// Where, inside.
        target: String,
        /// Mounted read-only.
        readonly: bool,
        /// The directory (or the `source=` subdirectory of it).
        dir: PathBuf,
        /// The lock file of a `sharing=locked` cache, held while the shell runs.
        lock: Option<PathBuf>,
    },
    /// An empty, discarded directory.
    Tmpfs {
        /// Where, inside.
        target: String,
    },
    /// A private copy of a path of another stage or an image (`from=`).
    From {
        /// Where, inside.
        target: String,
        /// Mounted read-only.
        readonly: bool,
        /// The stage's or image's layers.
        layers: Vec<LayerRef>,
        /// The path in them.
        path: String,
    },
    /// A private copy of a path of the build context.
    Context {
        /// Where, inside.
        target: String,
        /// Mounted read-only.
        readonly: bool,
        /// The context directory.
        context: PathBuf,
        /// The path in it.
        path: String,
    },
    /// A `--secret`: its value is never recorded, only where it went.
    Secret {
        /// Where, inside.
        target: String,
        /// The secret's id.
        id: String,
        /// The file's mode.
        mode: u32,
        /// The file's owner, when not root.
        uid: Option<u32>,
        /// The file's group, when not root's.
        gid: Option<u32>,
    },
    /// An `--ssh` agent socket.
    Ssh {
        /// Where, inside.
        target: String,
        /// The agent's id.
        id: String,
    },
}

impl MountView {
    /// Where it is mounted inside.
    pub fn target(&self) -> &str {
        match self {
            MountView::Cache { target, .. }
            | MountView::Tmpfs { target }
            | MountView::From { target, .. }
            | MountView::Context { target, .. }
            | MountView::Secret { target, .. }
            | MountView::Ssh { target, .. } => target,
        }
    }

    /// In `--mount` words, for the instructions printed without a terminal.
    pub fn describe(&self) -> String {
        let ro = |r: &bool| if *r { ",ro" } else { "" };
        match self {
            MountView::Cache {
                target,
                readonly,
                dir,
                ..
            } => format!(
                "type=cache,target={target}{} ({})",
                ro(readonly),
                dir.display()
            ),
            MountView::Tmpfs { target } => format!("type=tmpfs,target={target}"),
            MountView::From {
                target,
                readonly,
                path,
                ..
            } => format!(
                "type=bind,from=<stage>,source={path},target={target}{}",
                ro(readonly)
            ),
            MountView::Context {
                target,
                readonly,
                context,
                path,
            } => format!(
                "type=bind,source={path},target={target}{} (context {})",
                ro(readonly),
                context.display()
            ),
            MountView::Secret { target, id, .. } => format!("type=secret,id={id},target={target}"),
            MountView::Ssh { target, id } => format!("type=ssh,id={id},target={target}"),
        }
    }
}

/// One step of a build as a debug shell opens it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepView {
    /// Its number in the build's progress (`#7`).
    pub id: usize,
    /// Its stage and place (`stage-0 3/4`).
    pub stage: String,
    /// The instruction, as written.
    pub instruction: String,
    /// How it ended.
    pub status: StepStatus,
    /// The layers of the snapshot the shell opens on: after the step, or before it when it
    /// did not finish.
    pub layers: Vec<LayerRef>,
    /// A failed RUN's upper dir (its name in the record's directory): the files it left.
    pub kept_upper: Option<String>,
    /// The environment, `KEY=value` (filled by [`DebugRecord::step`]; the record keeps
    /// [`StepView::env_diff`]).
    #[serde(skip)]
    pub env: Vec<String>,
    /// The environment as a change to an earlier step's.
    pub env_diff: EnvDiff,
    /// The working directory.
    pub workdir: String,
    /// `USER`, empty for root.
    pub user: String,
    /// The shell of shell-form commands (`SHELL`).
    pub shell: Vec<String>,
    /// The network.
    pub network: RecordedNetwork,
    /// `--add-host` lines.
    pub extra_hosts: Vec<(String, String)>,
    /// A RUN's command line.
    pub command: Option<Vec<String>>,
    /// A RUN's mounts.
    pub mounts: Vec<MountView>,
}

/// A build's record: its steps, and the directory it lives in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DebugRecord {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// The steps, by number.
    pub steps: Vec<StepView>,
    /// Where it was read from (files a step left live there).
    #[serde(skip)]
    pub dir: PathBuf,
}

impl DebugRecord {
    /// The step numbered `id`, its environment filled in.
    pub fn step(&self, id: usize) -> Result<StepView, DebugShellError> {
        let mut view = self.stored(id).ok_or(DebugShellError::NoStep(id))?.clone();
        view.env = self.env_of(id)?;
        Ok(view)
    }

    /// The step whose command failed, if one did.
    pub fn failed(&self) -> Option<usize> {
        self.steps
            .iter()
            .find(|s| matches!(s.status, StepStatus::Failed { .. }))
            .map(|s| s.id)
    }

    /// The files a failed step left, when they are still there.
    pub fn kept_upper(&self, step: &StepView) -> Option<PathBuf> {
        let p = self.dir.join(step.kept_upper.as_ref()?);
        p.is_dir().then_some(p)
    }

    fn stored(&self, id: usize) -> Option<&StepView> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Step `id`'s environment: its chain of diffs back to a whole one, applied forward.
    fn env_of(&self, id: usize) -> Result<Vec<String>, DebugShellError> {
        let bad = |reason: String| DebugShellError::BadRecord {
            path: self.dir.join(RECORD_FILE),
            reason,
        };
        let mut chain = vec![id];
        let mut at = id;
        while let Some(base) = self.stored(at).and_then(|s| s.env_diff.base) {
            // Bases come earlier: a chain always ends.
            if base >= at || self.stored(base).is_none() {
                return Err(bad(format!(
                    "step #{at}'s environment refers to step #{base}"
                )));
            }
            chain.push(base);
            at = base;
        }
        let mut env: Vec<String> = Vec::new();
        for step in chain.iter().rev() {
            let d = &self.stored(*step).expect("in the chain").env_diff;
            if d.front + d.back > env.len() {
                return Err(bad(format!(
                    "step #{step}'s environment does not fit its base"
                )));
            }
            env = d.apply(&env);
        }
        Ok(env)
    }
}

/// An environment as a change to a base one: keep `front` entries of the base's start and
/// `back` of its end, with `middle` between them (a whole environment has no base).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvDiff {
    /// The step whose environment this changes.
    pub base: Option<usize>,
    /// Entries kept from the start of the base's.
    pub front: usize,
    /// Entries kept from the end of the base's.
    pub back: usize,
    /// What is new between them.
    pub middle: Vec<String>,
}

impl EnvDiff {
    /// The change from `before` (step `base`'s) to `after`: the longest common start and
    /// end kept, the rest new. ENV of a new name, or of one set before, adds one entry.
    pub fn between(base: Option<usize>, before: &[String], after: &[String]) -> EnvDiff {
        let front = before.iter().zip(after).take_while(|(a, b)| a == b).count();
        let back = before[front..]
            .iter()
            .rev()
            .zip(after[front..].iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        EnvDiff {
            base,
            front,
            back,
            middle: after[front..after.len() - back].to_vec(),
        }
    }

    /// The environment this gives over `before` (whose length fits `front + back`).
    pub fn apply(&self, before: &[String]) -> Vec<String> {
        let mut out = Vec::with_capacity(self.front + self.middle.len() + self.back);
        out.extend_from_slice(&before[..self.front]);
        out.extend(self.middle.iter().cloned());
        out.extend_from_slice(&before[before.len() - self.back..]);
        out
    }
}

/// The debug directory of a store.
pub(super) fn debug_root(store: &Store) -> PathBuf {
    store.root().join("debug")
}

/// The record of the last build that ended in `store`.
pub fn last_build(store: &Store) -> Result<DebugRecord, DebugShellError> {
    let root = debug_root(store);
    let last = root.join(LAST_FILE);
    let name = match std::fs::read_to_string(&last) {
        Ok(n) => n.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DebugShellError::NoBuild),
        Err(source) => return Err(DebugShellError::Read { path: last, source }),
    };
    if !valid_dir_name(&name) {
        return Err(DebugShellError::BadRecord {
            path: last,
            reason: format!("{name:?} is not a build's directory"),
        });
    }
    read_record(&root.join(name))
}

/// The record of the newest build that process `pid` ran in `store` (kiln's own, right
/// after its build failed: another build that ended meanwhile does not replace it).
pub fn build_of_process(store: &Store, pid: u32) -> Result<DebugRecord, DebugShellError> {
    let root = debug_root(store);
    let suffix = format!("-{pid}");
    let newest = std::fs::read_dir(&root)
        .map_err(|source| DebugShellError::Read {
            path: root.clone(),
            source,
        })?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| valid_dir_name(n) && n.ends_with(&suffix))
        .max()
        .ok_or(DebugShellError::NoBuild)?;
    read_record(&root.join(newest))
}

fn read_record(dir: &Path) -> Result<DebugRecord, DebugShellError> {
    use std::io::Read;
    let path = dir.join(RECORD_FILE);
    let read_err = |source| DebugShellError::Read {
        path: path.clone(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DebugShellError::NoBuild,
            _ => read_err(e),
        })?
        .take(MAX_RECORD)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    let mut rec: DebugRecord =
        serde_json::from_slice(&bytes).map_err(|e| DebugShellError::BadRecord {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    if rec.version != RECORD_VERSION {
        return Err(DebugShellError::BadRecord {
            path,
            reason: format!("format version {} is not {RECORD_VERSION}", rec.version),
        });
    }
    rec.dir = dir.to_path_buf();
    Ok(rec)
}

/// `build-<digits>-<digits>`: nothing that could lead out of the debug directory.
pub(super) fn valid_dir_name(name: &str) -> bool {
    name.strip_prefix(DIR_PREFIX)
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(t, p)| {
            !t.is_empty()
                && !p.is_empty()
                && t.bytes().all(|b| b.is_ascii_digit())
                && p.bytes().all(|b| b.is_ascii_digit())
        })
}

/// The owning process of a build directory, from its name.
pub(super) fn dir_pid(name: &str) -> Option<i32> {
    name.rsplit('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_build_directory_names_are_followed() {
        for ok in ["build-0001-2", "build-000000000000000000012345-99"] {
            assert!(valid_dir_name(ok), "{ok}");
        }
        for bad in [
            "build-",
            "build-1",
            "build-1-",
            "build--1",
            "build-1-2/../x",
            "../build-1-2",
            "build-1-2-3",
            "last",
        ] {
            assert!(!valid_dir_name(bad), "{bad}");
        }
        assert_eq!(dir_pid("build-0001-42"), Some(42));
    }

    #[test]
    fn env_diffs_keep_what_is_unchanged_and_apply_back() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases = [
            (v(&[]), v(&["PATH=/bin"]), (0, 0, 1)),
            (
                v(&["PATH=/bin", "A=1"]),
                v(&["PATH=/bin", "A=1", "B=2"]),
                (2, 0, 1),
            ),
            (
                v(&["PATH=/bin", "A=1", "X=arg"]),
                v(&["PATH=/bin", "A=2", "X=arg"]),
                (1, 1, 1),
            ),
            (v(&["A=1", "B=2"]), v(&["A=1", "B=2"]), (2, 0, 0)),
            (v(&["A=1", "B=2", "C=3"]), v(&["C=3"]), (0, 1, 0)),
            (v(&["A=1"]), v(&[]), (0, 0, 0)),
        ];
        for (before, after, (front, back, middle)) in cases {
            let d = EnvDiff::between(Some(1), &before, &after);
            assert_eq!(
                (d.front, d.back, d.middle.len()),
                (front, back, middle),
                "{before:?} → {after:?}"
            );
            assert_eq!(d.apply(&before), after);
        }
    }

    #[test]
    fn a_bad_chain_of_environments_is_an_error_not_a_loop_or_a_panic() {
        let step = |id: usize, base: Option<usize>, front: usize| StepView {
            id,
            stage: String::new(),
            instruction: String::new(),
            status: StepStatus::Done,
            layers: vec![],
            kept_upper: None,
            env: vec![],
            env_diff: EnvDiff {
                base,
                front,
                back: 0,
                middle: vec![format!("S{id}=1")],
            },
            workdir: "/".into(),
            user: String::new(),
            shell: vec![],
            network: RecordedNetwork::None,
            extra_hosts: vec![],
            command: None,
            mounts: vec![],
        };
        let rec = |steps| DebugRecord {
            version: RECORD_VERSION,
            steps,
            dir: PathBuf::from("/nowhere"),
        };
        let good = rec(vec![
            step(1, None, 0),
            step(2, Some(1), 1),
            step(3, Some(2), 2),
        ]);
        assert_eq!(good.step(3).unwrap().env, ["S1=1", "S2=1", "S3=1"]);
        for (steps, id) in [
            (vec![step(1, Some(1), 0)], 1),
            (vec![step(1, Some(2), 0), step(2, Some(1), 0)], 2),
            (vec![step(1, None, 0), step(2, Some(1), 5)], 2),
            (vec![step(2, Some(1), 0)], 2),
        ] {
            let e = rec(steps).step(id).unwrap_err();
            assert!(matches!(e, DebugShellError::BadRecord { .. }), "{e}");
        }
    }
}
