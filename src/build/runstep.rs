//! RUN: the command line and environment → the mounts → the key → look it up → run the
//! command in a sandbox over the stage's layers → commit what it changed as a layer.

use std::collections::BTreeMap;

use crate::cache::KeyBuilder;
use crate::executor::{self, ExitStatus, Output, RwLayer, StepIo, StepOutcome, StepSpec};
use crate::image::Digest;
use crate::planner::ops::{Command, Network, Op, RunOp};

use super::debugshell::RunView;
use super::error::RunError;
use super::runmounts::MountSet;
use super::{BuildError, BuildEvent, Builder, StageResult};
use crate::rootfs::layers::FsError;

/// What a RUN runs, resolved against the stage: the key's inputs.
struct RunInputs {
    argv: Vec<String>,
    env: Vec<String>,
    user: String,
    workdir: String,
    network: executor::NetworkMode,
}

impl RunInputs {
    fn network_name(&self) -> &'static str {
        match self.network {
            executor::NetworkMode::Sandbox => "sandbox",
            executor::NetworkMode::Host => "host",
            executor::NetworkMode::None => "none",
        }
    }
}

impl Builder<'_> {
    /// RUN: the command in a sandbox over the stage's layers; what it changed is a layer.
    pub(crate) fn run_step(
        &self,
        id: usize,
        cur: &mut StageResult,
        op: &Op,
        r: &RunOp,
        stages: &BTreeMap<usize, StageResult>,
        position: &str,
    ) -> Result<(), BuildError> {
        let at = BuildError::at::<RunError>(op.location);
        let fs_at = BuildError::at::<FsError>(op.location);
        let run = self.run_inputs(cur, r).map_err(&at)?;
        // Mounts are prepared before the key: a bind's content is part of it.
        let scratch = crate::rootfs::layers::scratch_dir(self.store).map_err(&fs_at)?;
        let mounts = self.prepare_mounts(cur, &r.mounts, scratch.path(), stages, op.location)?;
        let key = run_key(cur, &run, &mounts, self.req);
        let mut inputs = BTreeMap::new();
        inputs.insert("instruction".to_string(), op.code.clone());
        for (k, v) in cur.state.arg_values() {
            inputs.insert(format!("arg:{k}"), v);
        }
        for e in &cur.state.spec.config.env {
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            inputs.insert(format!("env:{k}"), v.to_string());
        }
        inputs.insert("user".to_string(), run.user.clone());
        inputs.insert("workdir".to_string(), run.workdir.clone());
        inputs.insert("network".to_string(), run.network_name().to_string());
        self.debug.run_inputs(
            id,
            RunView {
                command: run.argv.clone(),
                env: run.env.clone(),
                workdir: run.workdir.clone(),
                user: run.user.clone(),
                network: run.network,
                mounts: mounts.views.clone(),
            },
        );
        if self.lookup(Some(id), position, &key, &mut || inputs.clone(), cur) {
            self.debug.cached(id);
            self.settle_key(&key, cur);
            return Ok(());
        }
        // A foreign platform's step runs under an emulator; without a usable one, a clear
        // error now rather than "exec format error" in the step's output.
        let binfmt = self
            .req
            .binfmt_dir
            .clone()
            .unwrap_or_else(executor::binfmt::dir);
        executor::binfmt::support(&cur.platform, &binfmt).map_err(|source| {
            BuildError::Emulation {
                source: Box::new(source),
                location: op.location,
            }
        })?;
        let created_by = format!("RUN {} # kiln", run.argv.join(" "));
        let shown = serde_json::to_string(&run.argv).unwrap_or_default();
        let (outcome, spec, res) = self.execute(id, cur, run, &mounts, scratch.path(), op)?;
        if let Err(e) = failure(&outcome.status, &shown, op) {
            // The files the command left stay for `kiln debug shell` (until the next build).
            if let BuildError::RunFailed { message, code, .. } = &e {
                self.debug.failed(id, &res.path(), *code, message.clone());
            }
            return Err(e);
        }
        // The snapshot of what changed, if anything: the step's layer.
        let upper = res.path();
        let changed = std::fs::read_dir(&upper)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if changed {
            let layer = crate::rootfs::layers::commit_run_dir(
                self.store,
                &upper,
                &spec.lowers,
                self.req.source_date_epoch,
            )
            .map_err(&fs_at)?;
            res.commit(
                crate::rootfs::layers::top_chain(&cur.state.layers).as_ref(),
                &layer.diff_id,
            )
            .map_err(|e| at(e.into()))?;
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

    /// The command line (the stage's shell for a shell form), the environment (with the
    /// proxy build args), the user, the directory and the network of a RUN.
    fn run_inputs(&self, cur: &StageResult, r: &RunOp) -> Result<RunInputs, RunError> {
        let argv: Vec<String> = match &r.command {
            Command::Exec(v) => v.clone(),
            Command::Shell(script) => cur
                .state
                .shell()
                .into_iter()
                .chain(std::iter::once(script.clone()))
                .collect(),
        };
        if argv.is_empty() {
            return Err(RunError::NoCommand);
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
        let network = match r.network {
            Network::None => executor::NetworkMode::None,
            // BuildKit's network.host entitlement: the host's network (its loopback services
            // included) only when the one building asked for it.
            Network::Host
                if !self.req.allow_network_host
                    && self.req.network != executor::NetworkMode::Host =>
            {
                return Err(RunError::NetworkHostNotAllowed)
            }
            Network::Host => executor::NetworkMode::Host,
            Network::Default => self.req.network,
        };
        Ok(RunInputs {
            argv,
            env,
            user: cur.state.spec.config.user.clone(),
            // The config keeps an absolute WORKDIR as written (`/a/../b`); the step runs in
            // the directory it names.
            workdir: executor::clean_workdir(&cur.state.spec.config.working_dir),
            network,
        })
    }

    /// Run the command: mount sources made, a snapshot reserved for what it writes, the
    /// sandbox started on the build's network, its output streamed and logged. How the
    /// command ended is the caller's to judge ([`failure`]).
    fn execute(
        &self,
        id: usize,
        cur: &StageResult,
        run: RunInputs,
        mounts: &MountSet,
        scratch: &std::path::Path,
        op: &Op,
    ) -> Result<(StepOutcome, StepSpec, crate::store::SnapshotReservation), BuildError> {
        let at = BuildError::at::<RunError>(op.location);
        for p in &mounts.pending {
            p.run(self.store)
                .map_err(|e| at(RunError::MountSource(e)))?;
        }
        let lowers = crate::rootfs::layers::lower_dirs(self.store, &cur.state.layers)
            .map_err(BuildError::at::<FsError>(op.location))?;
        let res = self.store.reserve_snapshot().map_err(|e| at(e.into()))?;
        let work = scratch.join("work");
        std::fs::create_dir(&work).map_err(|e| at(e.into()))?;
        let network = run.network;
        let mut spec = StepSpec::new(lowers, scratch, run.argv);
        spec.rw = RwLayer::Dirs {
            upper: res.path(),
            work,
        };
        spec.env = run.env;
        // Set for the run only: not in the key, the config or the history.
        if let Some(sock) = &mounts.ssh_sock {
            if !spec.env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                spec.env.push(format!("SSH_AUTH_SOCK={sock}"));
            }
        }
        spec.workdir = run.workdir;
        spec.user = run.user;
        spec.network = network;
        // A namespace of the build's pool, connected already: the step joins it (a setns)
        // instead of starting a pasta of its own.
        let net = match network {
            // The unprivileged mode has no network namespaces: the step uses the host's.
            executor::NetworkMode::Sandbox if !executor::unpriv::enabled() => {
                Some(self.netpool.take().map_err(|e| at(RunError::Network(e)))?)
            }
            _ => None,
        };
        spec.netns = net.as_ref().and_then(|n| n.netns());
        spec.cancel = self.cancel.clone();
        spec.extra_hosts = self.req.extra_hosts.clone();
        // BuildKit's RUN: one fixed hostname (a random one would differ between two stores
        // in whatever a step writes of it) and no /etc/hostname.
        spec.hostname = Some("buildkitsandbox".to_string());
        spec.build_step = true;
        spec.shm_size = self.req.shm_size;
        spec.ulimits = self.req.ulimits.clone();
        spec.binds = mounts.binds.clone();
        let outcome = self.run_logged(id, &spec);
        // run_step has reaped the step's PID 1, so its PID namespace is empty: no process of
        // the step (and no socket of one) is left in the namespace the next step gets.
        drop(net);
        let outcome = outcome.map_err(|e| at(e.into()))?;
        Ok((outcome, spec, res))
    }

    /// Run the step, its full output going to the step's log file (never clipped) as well
    /// as to the progress display.
    fn run_logged(
        &self,
        id: usize,
        spec: &StepSpec,
    ) -> Result<StepOutcome, crate::executor::ExecError> {
        let progress = self.progress;
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
        executor::run_step(
            spec,
            StepIo {
                stdin: Default::default(),
                stdout: Output::Lines(&mut out),
                stderr: Output::Lines(&mut errs),
                on_start: None,
                console: None,
                on_ready: None,
            },
        )
    }
}

/// A command that did not exit 0, as the build's error.
fn failure(status: &ExitStatus, shown: &str, op: &Op) -> Result<(), BuildError> {
    let failed = |message: String, code: i32| BuildError::RunFailed {
        message,
        location: op.location,
        code,
    };
    match *status {
        ExitStatus::Code(0) => Ok(()),
        ExitStatus::Code(c) => Err(failed(
            format!("process {shown} did not complete successfully: exit code: {c}"),
            c,
        )),
        ExitStatus::Signal(s) => Err(failed(
            format!("process {shown} did not complete successfully: killed by signal {s}"),
            128 + s,
        )),
    }
}

/// A RUN's key: its mounts, parent, command line, environment, user, directory, network,
/// and `--shm-size` and `--ulimit` when given (as in BuildKit's; absent, keys stay as they
/// were).
fn run_key(
    cur: &StageResult,
    run: &RunInputs,
    mounts: &MountSet,
    req: &super::BuildRequest,
) -> Digest {
    let mut key = KeyBuilder::new("run");
    if let Some(bytes) = req.shm_size {
        key.text("shm-size", &bytes.to_string());
    }
    if !req.ulimits.is_empty() {
        let limits: Vec<String> = req.ulimits.iter().map(|u| u.to_string()).collect();
        key.list("ulimits", &limits);
    }
    key.list("mounts", &mounts.key_parts);
    key.text("parent", cur.key.as_str())
        .list("argv", &run.argv)
        .list("env", &run.env)
        .text("user", &run.user)
        .text("workdir", &run.workdir)
        .text("network", run.network_name());
    key.finish()
}
