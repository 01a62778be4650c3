//! The per-container monitor (the role of containerd-shim): a detached `kiln` process that
//! owns the container's PID 1 and its stdio, writes its log, records its state, serves
//! attach clients, forwards published ports and applies the restart policy.
//!
//! [`super::launch`] starts it with `setsid` and a pipe it reads a few words from: `attach` once the
//! attach socket listens (when the CLI wants to attach before the process starts),
//! `started` once PID 1 runs, or `error <code> <message>` if it could not be started. After
//! that the CLI may exit; the monitor lives until the container ends for good.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::attach;
use super::cgroups::{Cgroup, Hierarchy};
use super::logs;
use super::ports::{self, NetnsSlot};
use super::session::{self, Client, Session};
use super::{
    Container, ContainerConfig, ContainerError, Network, Result, State, Status, FORMAT_VERSION,
};
use crate::executor::{BindMount, ExecError, NetworkMode, RwLayer, StepSpec};
use crate::rootfs::layers::lower_dirs;
use crate::store::Store;

/// How long the monitor waits for the CLI to attach before starting anyway.
const ATTACH_WAIT: Duration = Duration::from_secs(30);
/// Docker's restart backoff: 100 ms, doubling, at most a minute; reset after 10 s of running.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const BACKOFF_RESET: Duration = Duration::from_secs(10);

/// The exit code Docker gives a container whose command could not be started.
pub fn start_failure_code(e: &ExecError) -> i32 {
    match e {
        ExecError::CommandNotFound(_) => 127,
        ExecError::Exec { source, .. } if source.kind() == io::ErrorKind::NotFound => 127,
        ExecError::Exec { .. } => 126,
        // Docker's code for a container the runtime could not create (no namespaces, no
        // privilege, a bad mount): 125, as for its own errors.
        _ => 125,
    }
}

/// Docker's words for a command that could not be started (`docker run`'s message after
/// "Error response from daemon: ", `docker exec`'s after "OCI runtime exec failed: "): a
/// missing or unusable command as runc words it, a missing user as Docker does, anything
/// else as the runtime's failure to create the task.
pub fn start_failure_message(e: &ExecError) -> String {
    match e {
        ExecError::UnknownUser(_) | ExecError::UnknownGroup(_) | ExecError::BadUser { .. } => {
            e.to_string()
        }
        ExecError::Exec { cmd, source } => {
            let why = match source.kind() {
                io::ErrorKind::NotFound => format!("stat {cmd}: no such file or directory"),
                io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                _ => lowercase_errno(source),
            };
            format!("failed to create task for container: exec: {cmd:?}: {why}")
        }
        _ => format!("failed to create task for container: {e}"),
    }
}

/// An errno's text as Go prints it: "exec format error", not "Exec format error (os error 8)".
fn lowercase_errno(e: &io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Runs the monitor for container `id` until it ends for good; returns the process's exit
/// code. `ready` is the CLI's pipe (see the module docs).
pub fn run(root: &Path, id: &str, ready: Option<fs::File>, wait_attach: bool) -> i32 {
    // The monitor's stderr is /dev/null: leave a panic where `kiln inspect` users can find it.
    let err_path = root.join("containers").join(id).join("monitor.err");
    std::panic::set_hook(Box::new(move |info| {
        let _ = fs::write(&err_path, format!("kiln monitor panicked: {info}\n"));
    }));
    let mut ready = Ready(ready);
    match monitor(root, id, &mut ready, wait_attach) {
        Ok(()) => 0,
        Err(e) => {
            ready.error(125, &e.to_string());
            let _ = fs::write(
                root.join("containers").join(id).join("monitor.err"),
                format!("{e}\n"),
            );
            1
        }
    }
}

/// The CLI's pipe; silent once closed.
pub(super) struct Ready(Option<fs::File>);

impl Ready {
    fn say(&mut self, line: &str) {
        if let Some(f) = &mut self.0 {
            if f.write_all(format!("{line}\n").as_bytes()).is_err() {
                self.0 = None;
            }
        }
    }
    pub(super) fn error(&mut self, code: i32, msg: &str) {
        self.say(&format!("error {code} {}", msg.replace('\n', " ")));
        self.0 = None;
    }
    pub(super) fn started(&mut self) {
        self.say("started");
        self.0 = None;
    }
}

fn lock_monitor(dir: &Path) -> Result<fs::File> {
    let path = dir.join("monitor.lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(super::io_err("opening", &path))?;
    // SAFETY: flock on a valid fd.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(ContainerError::State(
            "the container is already running (its monitor holds the lock)".into(),
        ));
    }
    Ok(f)
}

/// A close-on-exec pipe: (read end, write end).
pub(super) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: valid array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn monitor(root: &Path, id: &str, ready: &mut Ready, wait_attach: bool) -> Result<()> {
    let dir = root.join("containers").join(id);
    let _lock = lock_monitor(&dir)?;
    let c = Container::load(&dir)?;
    let cfg = c.config.clone();
    let mut state = fresh_state(&dir, &c);
    let cgroup = container_cgroup(&cfg)?;
    let lowers = {
        let store = Store::open(root)?;
        lower_dirs(&store, &c.layers()?).map_err(|e| ContainerError::Layers {
            what: "preparing the image's layers",
            source: e.into(),
        })?
    };
    let netns: NetnsSlot = Arc::new(Mutex::new(None));
    state.ports = publish_ports(&cfg, &netns)?;
    let (listener, mut clients) = listen_for_clients(&dir, ready, wait_attach)?;
    let spec = container_spec(&dir, &cfg, lowers);
    let session = Session {
        dir: &dir,
        spec: &spec,
        cfg: &cfg,
        listener: &listener,
        netns: &netns,
        cgroup: cgroup.as_ref(),
    };
    let mut log = logs::Writer::open(&dir).map_err(super::io_err("opening log in", &dir))?;
    let mut backoff = BACKOFF_START;
    loop {
        let started_at = Instant::now();
        let ooms = cgroup.as_ref().map_or(0, Cgroup::oom_kills);
        let (code, start_error) = session.run_once(&mut state, &mut clients, &mut log, ready)?;
        state.oom_killed = cgroup.as_ref().map_or(0, Cgroup::oom_kills) > ooms;
        let again = record_exit(&dir, &cfg, &mut state, code, start_error.as_deref())?;
        // Told once the state records it: a CLI that then looks must see the failure.
        if let Some(e) = &start_error {
            ready.error(code, e);
        }
        session::farewell(&mut clients, code, start_error.as_ref());
        if !again {
            break;
        }
        if started_at.elapsed() >= BACKOFF_RESET {
            backoff = BACKOFF_START;
        }
        if !wait_to_restart(&dir, &mut state, backoff)? {
            break;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    drop(listener);
    let _ = fs::remove_file(dir.join("attach.sock"));
    if cfg.auto_remove {
        let cs = super::Containers::new(root);
        if let Ok(c) = Container::load(&dir) {
            cs.remove_dir(&c)?;
        }
    }
    Ok(())
}

/// The state a new start begins from: the recorded one, owned by this monitor, with the
/// last run's leftovers cleared.
fn fresh_state(dir: &Path, c: &Container) -> State {
    let mut state = c.state.clone();
    state.version = FORMAT_VERSION;
    state.monitor_pid = std::process::id() as i32;
    state.error.clear();
    let _ = fs::remove_file(dir.join("stop-requested"));
    let _ = fs::remove_file(dir.join("monitor.err"));
    state.manually_stopped = false;
    state.restart_count = 0;
    state.oom_killed = false;
    state
}

/// Binds the published ports and serves them into the container's network namespace once
/// it exists; returns the bindings with the host ports chosen.
fn publish_ports(cfg: &ContainerConfig, netns: &NetnsSlot) -> Result<Vec<super::PortBinding>> {
    let mut port_specs = cfg.ports.clone();
    if cfg.network != Network::Host {
        let listeners = ports::bind(&mut port_specs)?;
        ports::serve(listeners, netns.clone());
    }
    Ok(port_specs)
}

/// Listens on the container's attach socket; with `wait_attach`, tells the CLI and waits
/// (a while) for it to attach before the process starts.
fn listen_for_clients(
    dir: &Path,
    ready: &mut Ready,
    wait_attach: bool,
) -> Result<(UnixListener, Vec<Client>)> {
    let (_dirfd, sock_path) = attach::socket_path(dir).map_err(super::io_err("opening", dir))?;
    let _ = fs::remove_file(dir.join("attach.sock"));
    let listener = UnixListener::bind(&sock_path)
        .map_err(super::io_err("listening on", dir.join("attach.sock")))?;
    let mut clients: Vec<Client> = Vec::new();
    if wait_attach {
        ready.say("attach");
        if wait_readable(listener.as_fd(), ATTACH_WAIT) {
            if let Some(c) = session::accept(&listener) {
                clients.push(c);
            }
        }
    }
    Ok((listener, clients))
}

/// What the container runs: its command over the image's layers and its own upper dir,
/// with its mounts, network and options.
fn container_spec(dir: &Path, cfg: &ContainerConfig, lowers: Vec<PathBuf>) -> StepSpec {
    let mut spec = cfg.step_spec(dir.join("run"), cfg.argv.clone());
    spec.lowers = lowers;
    spec.rw = RwLayer::Dirs {
        upper: dir.join("upper"),
        work: dir.join("work"),
    };
    spec.init = cfg.init;
    spec.readonly_root = cfg.read_only;
    spec.tmpfs = cfg.tmpfs.clone();
    spec.extra_hosts = cfg.extra_hosts.clone();
    spec.network = match cfg.network {
        Network::Host => NetworkMode::Host,
        Network::Private | Network::Pasta | Network::None => NetworkMode::None,
    };
    spec.binds = cfg
        .mounts
        .iter()
        .map(|m| BindMount {
            source: m.source.clone(),
            target: m.destination.clone(),
            readonly: !m.rw,
        })
        .collect();
    spec
}

/// Records how a run ended; returns whether the restart policy wants another run. A final
/// exit is recorded before the clients hear of it: a CLI that then looks at the container
/// must see it exited. A command that never started leaves the container created, with the
/// code and the error, as Docker leaves it.
fn record_exit(
    dir: &Path,
    cfg: &ContainerConfig,
    state: &mut State,
    code: i32,
    start_error: Option<&str>,
) -> Result<bool> {
    let start_failed = start_error.is_some();
    let stop_requested = dir.join("stop-requested").exists();
    state.manually_stopped = stop_requested;
    state.pid = 0;
    state.pid_start = 0;
    state.exit_code = code;
    state.finished_at = super::now();
    let again = !start_failed
        && cfg
            .restart
            .should_restart(code, state.restart_count, stop_requested);
    if let Some(e) = start_error {
        state.error = e.to_string();
    }
    if !again {
        state.status = if start_failed && state.started_at.is_empty() {
            Status::Created
        } else {
            Status::Exited
        };
        super::write_state(dir, state)?;
    }
    Ok(again)
}

/// Marks the container restarting and waits out the backoff; false if someone stopped it
/// meanwhile (then recorded as exited).
fn wait_to_restart(dir: &Path, state: &mut State, backoff: Duration) -> Result<bool> {
    state.status = Status::Restarting;
    state.restart_count += 1;
    super::write_state(dir, state)?;
    let until = Instant::now() + backoff;
    while Instant::now() < until && !dir.join("stop-requested").exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    if dir.join("stop-requested").exists() {
        state.status = Status::Exited;
        state.manually_stopped = true;
        super::write_state(dir, state)?;
        return Ok(false);
    }
    Ok(true)
}

/// The container's cgroup, created (or found from an earlier start) with its limits. A host
/// without cgroups runs containers without one, unless limits were asked for.
fn container_cgroup(cfg: &ContainerConfig) -> Result<Option<Cgroup>> {
    let h = match Hierarchy::usable() {
        Ok(h) => h,
        Err(why) if cfg.resources.any() => {
            return Err(ContainerError::Other(format!("resource limits need {why}")));
        }
        Err(_) => return Ok(None),
    };
    let cg = Cgroup::new(h, &cfg.id)?;
    match cg.create(&cfg.resources) {
        Ok(()) => Ok(Some(cg)),
        Err(e) if cfg.resources.any() => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "the container runs without a cgroup of its own");
            let _ = cg.remove();
            Ok(None)
        }
    }
}

/// Sets a pty's window size; the kernel sends SIGWINCH to its foreground process group.
pub fn resize(fd: RawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: ioctl with a valid winsize.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) > 0 }
}

/// `name` looked up in `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_failures_get_dockers_codes_and_words() {
        let exec = |kind: io::ErrorKind| ExecError::Exec {
            cmd: "/etc".into(),
            source: io::Error::from(kind),
        };
        let eacces = ExecError::Exec {
            cmd: "/etc".into(),
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        let enoexec = ExecError::Exec {
            cmd: "/x".into(),
            source: io::Error::from_raw_os_error(libc::ENOEXEC),
        };
        let task = "failed to create task for container: ";
        for (e, code, words) in [
            (
                ExecError::CommandNotFound("nosuchcmd".into()),
                127,
                format!("{task}exec: \"nosuchcmd\": executable file not found in $PATH"),
            ),
            (
                exec(io::ErrorKind::NotFound),
                127,
                format!("{task}exec: \"/etc\": stat /etc: no such file or directory"),
            ),
            (
                eacces,
                126,
                format!("{task}exec: \"/etc\": permission denied"),
            ),
            (
                enoexec,
                126,
                format!("{task}exec: \"/x\": exec format error"),
            ),
            (
                ExecError::UnknownUser("nosuchuser".into()),
                125,
                "unable to find user nosuchuser: no matching entries in passwd file".into(),
            ),
            (
                ExecError::TooManyLayers(600),
                125,
                format!("{task}too many lower layers: 600 (overlayfs stacks at most 500)"),
            ),
        ] {
            assert_eq!(start_failure_code(&e), code, "{e}");
            assert_eq!(start_failure_message(&e), words);
        }
    }
}
