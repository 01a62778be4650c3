//! A build's record as its steps run: each step's view when it starts, completed when it
//! ends (or fails, its upper dir moved aside), written when the stages end, and made the
//! store's last while the directories of builds before it go.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::executor::NetworkMode;
use crate::store::Store;

use super::super::state::StageState;
use super::record::{
    debug_root, dir_pid, valid_dir_name, DebugRecord, EnvDiff, MountView, StepStatus, StepView,
    DIR_PREFIX, LAST_FILE, RECORD_FILE, RECORD_VERSION,
};

/// What a RUN ran with (see [`Recorder::run_inputs`]).
pub(crate) struct RunView {
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
    pub network: NetworkMode,
    pub mounts: Vec<MountView>,
}

/// This build's record, filled as steps start and end, written when the stages end.
pub(crate) struct Recorder {
    root: PathBuf,
    name: String,
    network: NetworkMode,
    extra_hosts: Vec<(String, String)>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    steps: BTreeMap<usize, StepView>,
    /// Each step's stage (its label).
    stage_of: HashMap<usize, String>,
    /// Per stage: the last step that ended and its whole environment, which the next
    /// step's is a diff against.
    last_env: HashMap<String, (usize, Vec<String>)>,
}

impl Inner {
    /// Step `id`'s environment is `env`: stored as a diff against its stage's last.
    fn set_env(&mut self, id: usize, env: Vec<String>) {
        let Some(stage) = self.stage_of.get(&id).cloned() else {
            return;
        };
        let diff = match self.last_env.get(&stage) {
            Some((base, before)) => EnvDiff::between(Some(*base), before, &env),
            None => EnvDiff::between(None, &[], &env),
        };
        if let Some(v) = self.steps.get_mut(&id) {
            v.env_diff = diff;
        }
        self.last_env.insert(stage, (id, env));
    }
}

impl Recorder {
    pub(crate) fn new(
        store: &Store,
        network: NetworkMode,
        extra_hosts: Vec<(String, String)>,
    ) -> Recorder {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Recorder {
            root: debug_root(store),
            name: format!("{DIR_PREFIX}{now:024}-{}", std::process::id()),
            network,
            extra_hosts,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.join(&self.name)
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Step `id` (`place` in stage `label`) starts on `state`: until it ends, its view is
    /// that state.
    pub(crate) fn begin(
        &self,
        id: usize,
        label: &str,
        place: String,
        instruction: &str,
        state: &StageState,
    ) {
        let view = StepView {
            id,
            stage: place,
            instruction: instruction.to_string(),
            status: StepStatus::NotFinished,
            layers: state.layers.clone(),
            kept_upper: None,
            env: Vec::new(),
            env_diff: EnvDiff::default(),
            workdir: crate::executor::clean_workdir(&state.spec.config.working_dir),
            user: state.spec.config.user.clone(),
            shell: state.shell(),
            network: self.network.into(),
            extra_hosts: self.extra_hosts.clone(),
            command: None,
            mounts: Vec::new(),
        };
        self.with(|inner| {
            // The state before a step is the one its stage's last step left: the same
            // environment, stored as an empty diff (no copy of it per step).
            let diff = match inner.last_env.get(label) {
                Some((base, before)) => EnvDiff {
                    base: Some(*base),
                    front: before.len(),
                    back: 0,
                    middle: Vec::new(),
                },
                None => EnvDiff::between(None, &[], &state.run_env()),
            };
            inner.steps.insert(
                id,
                StepView {
                    env_diff: diff,
                    ..view
                },
            );
            inner.stage_of.insert(id, label.to_string());
        });
    }

    /// Step `id` is a RUN with these inputs.
    pub(crate) fn run_inputs(&self, id: usize, inputs: RunView) {
        self.with(|inner| {
            if let Some(v) = inner.steps.get_mut(&id) {
                v.command = Some(inputs.command);
                v.workdir = inputs.workdir;
                v.user = inputs.user;
                v.network = inputs.network.into();
                v.mounts = inputs.mounts;
                inner.set_env(id, inputs.env);
            }
        });
    }

    /// Step `id` was answered by the cache.
    pub(crate) fn cached(&self, id: usize) {
        self.with(|inner| {
            if let Some(v) = inner.steps.get_mut(&id) {
                v.status = StepStatus::Cached;
            }
        });
    }

    /// Step `id` ended well, leaving `state`: the view is the state after it (a RUN keeps
    /// the inputs it ran with).
    pub(crate) fn finish(&self, id: usize, state: &StageState) {
        self.with(|inner| {
            let Some(v) = inner.steps.get_mut(&id) else {
                return;
            };
            if v.status == StepStatus::NotFinished {
                v.status = StepStatus::Done;
            }
            v.layers = state.layers.clone();
            if v.command.is_none() {
                v.workdir = crate::executor::clean_workdir(&state.spec.config.working_dir);
                v.user = state.spec.config.user.clone();
                v.shell = state.shell();
                inner.set_env(id, state.run_env());
            }
        });
    }

    /// Step `id`'s command failed: its upper dir `upper` moves into the record's directory
    /// (a rename: the same filesystem), so a shell can open on the files as it left them.
    pub(crate) fn failed(&self, id: usize, upper: &Path, code: i32, message: String) {
        let name = format!("step-{id}-upper");
        let kept = crate::common::atomic::create_dir_all(&self.dir(), 0o700)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                std::fs::rename(upper, self.dir().join(&name)).map_err(|e| e.to_string())
            });
        if let Err(e) = &kept {
            tracing::warn!(step = id, error = %e, "cannot keep the failed step's files for `kiln debug shell`");
        }
        self.with(|inner| {
            if let Some(v) = inner.steps.get_mut(&id) {
                v.status = StepStatus::Failed { code, message };
                v.kept_upper = kept.is_ok().then_some(name);
            }
        });
    }

    /// Write the record, make it the store's last, and remove the directories of earlier
    /// builds whose process is gone. Failing to is a warning: the build goes on.
    pub(crate) fn save(&self, store: &Store) {
        let steps: Vec<StepView> = self.with(|inner| inner.steps.values().cloned().collect());
        let rec = DebugRecord {
            version: RECORD_VERSION,
            steps,
            dir: PathBuf::new(),
        };
        let dir = self.dir();
        let tmp = store.tmp_dir();
        let written = serde_json::to_vec(&rec)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                use crate::common::atomic::{create_dir_all, write_atomic};
                create_dir_all(&dir, 0o700)
                    .and_then(|()| write_atomic(&tmp, &dir.join(RECORD_FILE), &bytes, 0o600))
                    .and_then(|()| {
                        let last = self.root.join(LAST_FILE);
                        write_atomic(&tmp, &last, self.name.as_bytes(), 0o600)
                    })
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot save the build's record for `kiln debug shell`");
            return;
        }
        self.remove_earlier();
    }

    /// Every other build's directory whose process has ended (a running `kiln build`, or
    /// its `--on-error=shell`, keeps its own).
    fn remove_earlier(&self) {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return;
        };
        for name in rd.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
            if name == self.name || !valid_dir_name(&name) {
                continue;
            }
            let alive = dir_pid(&name).is_some_and(|pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            });
            if !alive {
                let _ = std::fs::remove_dir_all(self.root.join(&name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::{build_of_process, last_build, RecordedNetwork};
    use super::*;

    fn state(env: &[&str]) -> StageState {
        let mut spec = crate::image::spec::ImageSpec::scratch();
        spec.config.env = env.iter().map(|s| s.to_string()).collect();
        StageState::new(spec, vec![], '\\')
    }

    #[test]
    fn the_record_round_trips_and_the_last_build_is_found() {
        let (_d, store) = crate::store::test_support::temp_store();
        let r = Recorder::new(&store, NetworkMode::None, vec![]);
        let mut s = state(&["PATH=/bin"]);
        r.begin(1, "s0", "s0 1/4".into(), "FROM scratch", &s);
        r.finish(1, &s);
        r.begin(2, "s0", "s0 2/4".into(), "ENV A=1", &s);
        s.spec.config.env.push("A=1".into());
        r.finish(2, &s);
        r.begin(3, "s0", "s0 3/4".into(), "RUN false", &s);
        r.run_inputs(
            3,
            RunView {
                command: vec!["/bin/sh".into(), "-c".into(), "false".into()],
                env: vec!["PATH=/bin".into(), "A=1".into(), "http_proxy=p".into()],
                workdir: "/w".into(),
                user: "app".into(),
                network: NetworkMode::Host,
                mounts: vec![MountView::Tmpfs {
                    target: "/t".into(),
                }],
            },
        );
        let upper = store.tmp_dir().join("upper-test");
        std::fs::create_dir_all(upper.join("made")).unwrap();
        r.failed(3, &upper, 1, "exit code: 1".into());
        // A step of a stage running beside it, which never ended.
        r.begin(4, "s1", "s1 1/1".into(), "COPY x y", &state(&["B=2"]));
        r.save(&store);

        let rec = last_build(&store).unwrap();
        assert_eq!(rec.steps.len(), 4);
        assert_eq!(rec.step(1).unwrap().status, StepStatus::Done);
        assert_eq!(rec.step(1).unwrap().env, ["PATH=/bin"]);
        assert_eq!(rec.step(2).unwrap().env, ["PATH=/bin", "A=1"]);
        assert_eq!(rec.failed(), Some(3));
        let failed = rec.step(3).unwrap();
        assert_eq!(failed.env, ["PATH=/bin", "A=1", "http_proxy=p"]);
        assert_eq!(failed.workdir, "/w");
        assert_eq!(failed.network, RecordedNetwork::Host);
        assert!(rec.kept_upper(&failed).unwrap().join("made").is_dir());
        assert!(!upper.exists(), "the upper dir was moved, not copied");
        let other = rec.step(4).unwrap();
        assert_eq!(other.status, StepStatus::NotFinished);
        // run_env: a stage without PATH gets the default one.
        assert_eq!(other.env[1..], ["B=2"]);
        assert!(other.env[0].starts_with("PATH="));
        let same = build_of_process(&store, std::process::id()).unwrap();
        assert_eq!(same.dir, rec.dir);

        // A later build's save removes the directories of builds whose process is gone
        // (one is named after a PID that cannot exist), not of live ones (this test's).
        let dead = debug_root(&store).join(format!("{DIR_PREFIX}0001-{}", i32::MAX));
        std::fs::create_dir_all(&dead).unwrap();
        Recorder::new(&store, NetworkMode::None, vec![]).save(&store);
        assert!(!dead.exists());
        assert!(
            rec.dir.exists(),
            "a live process keeps its build's directory"
        );
        assert_ne!(last_build(&store).unwrap().dir, rec.dir);
    }

    // 3,000 ENV lines: each step's record holds its one new entry, not the whole
    // environment again (security checklist 32: linear store size).
    #[test]
    fn many_env_steps_make_a_record_linear_in_their_number() {
        let (_d, store) = crate::store::test_support::temp_store();
        let r = Recorder::new(&store, NetworkMode::None, vec![]);
        let mut s = state(&["PATH=/bin"]);
        r.begin(1, "s0", "s0".into(), "FROM scratch", &s);
        r.finish(1, &s);
        let n = 3000;
        for i in 0..n {
            let id = i + 2;
            r.begin(id, "s0", "s0".into(), "ENV", &s);
            s.spec.config.env.push(format!("V{i}=value-{i}"));
            r.finish(id, &s);
        }
        r.save(&store);
        let rec = last_build(&store).unwrap();
        let bytes = std::fs::metadata(rec.dir.join(RECORD_FILE)).unwrap().len();
        assert!(bytes < (n as u64) * 1024, "{bytes} bytes for {n} steps");
        let last = rec.step(n + 1).unwrap();
        assert_eq!(last.env.len(), n + 1);
        assert_eq!(last.env[n], format!("V{}=value-{}", n - 1, n - 1));
    }
}
