//! The per-container monitor (the role of containerd-shim): a detached `kiln` process that
//! owns the container's PID 1 and its stdio, writes its log, records its state, serves
//! attach clients, forwards published ports and applies the restart policy.
//!
//! The CLI starts it with `setsid` and a pipe it reads a few words from: `attach` once the
//! attach socket listens (when the CLI wants to attach before the process starts),
//! `started` once PID 1 runs, or `error <code> <message>` if it could not be started. After
//! that the CLI may exit; the monitor lives until the container ends for good.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::attach::{self, Frame, Streams};
use super::cgroups::{Cgroup, Hierarchy};
use super::logs;
use super::ports::{self, NetnsSlot};
use super::{Container, ContainerError, Network, Result, State, Status, FORMAT_VERSION};
use crate::build::fs::lower_dirs;
use crate::executor::pasta::{Pasta, PastaOptions};
use crate::executor::{
    self, BindMount, ExecError, ExitStatus, Input, NetworkMode, Output, RwLayer, StepIo, StepSpec,
};
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
struct Ready(Option<fs::File>);

impl Ready {
    fn say(&mut self, line: &str) {
        if let Some(f) = &mut self.0 {
            if f.write_all(format!("{line}\n").as_bytes()).is_err() {
                self.0 = None;
            }
        }
    }
    fn error(&mut self, code: i32, msg: &str) {
        self.say(&format!("error {code} {}", msg.replace('\n', " ")));
        self.0 = None;
    }
    fn started(&mut self) {
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

/// What the run thread tells the I/O loop.
enum Event {
    Started(libc::pid_t, OwnedFd),
    Console(OwnedFd),
    Done(std::result::Result<ExitStatus, ExecError>, PathBuf),
}

struct Client {
    sock: UnixStream,
    streams: Streams,
}

/// The container's stdio as the monitor holds it.
struct Stdio {
    /// Output readers: (fd, stream 1|2). With a tty, one: the master.
    outputs: Vec<(OwnedFd, u8)>,
    /// Where client stdin goes (pipe write end or the master).
    stdin: Option<OwnedFd>,
    /// The pty master, for resizes.
    master: Option<OwnedFd>,
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

fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

fn monitor(root: &Path, id: &str, ready: &mut Ready, wait_attach: bool) -> Result<()> {
    let dir = root.join("containers").join(id);
    let _lock = lock_monitor(&dir)?;
    let c = Container::load(&dir)?;
    let cfg = c.config.clone();
    let mut state = c.state.clone();
    state.version = FORMAT_VERSION;
    state.monitor_pid = std::process::id() as i32;
    state.error.clear();
    let _ = fs::remove_file(dir.join("stop-requested"));
    let _ = fs::remove_file(dir.join("monitor.err"));
    state.manually_stopped = false;
    state.restart_count = 0;
    state.oom_killed = false;
    let cgroup = container_cgroup(&cfg)?;

    let lowers = {
        let store = Store::open(root).map_err(|e| ContainerError::Other(e.to_string()))?;
        lower_dirs(&store, &c.layers()?)
            .map_err(|e| ContainerError::Other(format!("preparing the image's layers: {e}")))?
    };

    let mut port_specs = cfg.ports.clone();
    let netns: NetnsSlot = Arc::new(Mutex::new(None));
    if cfg.network != Network::Host {
        let listeners = ports::bind(&mut port_specs)?;
        ports::serve(listeners, netns.clone());
    }
    state.ports = port_specs;

    let (_dirfd, sock_path) = attach::socket_path(&dir).map_err(super::io_err("opening", &dir))?;
    let _ = fs::remove_file(dir.join("attach.sock"));
    let listener = UnixListener::bind(&sock_path)
        .map_err(super::io_err("listening on", dir.join("attach.sock")))?;
    let mut clients: Vec<Client> = Vec::new();
    if wait_attach {
        ready.say("attach");
        if wait_readable(listener.as_fd(), ATTACH_WAIT) {
            if let Some(c) = accept(&listener) {
                clients.push(c);
            }
        }
    }

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

    let mut backoff = BACKOFF_START;
    let mut log = logs::Writer::open(&dir).map_err(super::io_err("opening log in", &dir))?;
    loop {
        let started_at = Instant::now();
        let ooms = cgroup.as_ref().map_or(0, Cgroup::oom_kills);
        let outcome = run_once(
            &dir,
            &spec,
            &cfg,
            &mut state,
            &listener,
            &mut clients,
            &mut log,
            &netns,
            cgroup.as_ref(),
            ready,
        )?;
        let (code, start_error) = outcome;
        state.oom_killed = cgroup.as_ref().map_or(0, Cgroup::oom_kills) > ooms;
        let stop_requested = dir.join("stop-requested").exists();
        state.manually_stopped = stop_requested;
        state.pid = 0;
        state.pid_start = 0;
        state.exit_code = code;
        state.finished_at = super::now();
        let again = start_error.is_none()
            && cfg
                .restart
                .should_restart(code, state.restart_count, stop_requested);
        if !again {
            // Recorded before the clients hear of the exit: a CLI that then looks at the
            // container must see it exited.
            state.status = Status::Exited;
            super::write_state(&dir, &state)?;
        }
        for mut cl in clients.drain(..) {
            if let Some(e) = &start_error {
                let _ = Frame::Error(e.clone()).write_to(&mut cl.sock);
            }
            let _ = Frame::Exit(code).write_to(&mut cl.sock);
        }
        if !again {
            break;
        }
        if started_at.elapsed() >= BACKOFF_RESET {
            backoff = BACKOFF_START;
        }
        state.status = Status::Restarting;
        state.restart_count += 1;
        super::write_state(&dir, &state)?;
        // Wait out the backoff, giving up if someone stops the container meanwhile.
        let until = Instant::now() + backoff;
        while Instant::now() < until && !dir.join("stop-requested").exists() {
            std::thread::sleep(Duration::from_millis(50));
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        if dir.join("stop-requested").exists() {
            state.status = Status::Exited;
            state.manually_stopped = true;
            super::write_state(&dir, &state)?;
            break;
        }
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

/// The container's cgroup, created (or found from an earlier start) with its limits. A host
/// without cgroups runs containers without one, unless limits were asked for.
fn container_cgroup(cfg: &super::ContainerConfig) -> Result<Option<Cgroup>> {
    let Some(h) = Hierarchy::host() else {
        if cfg.resources.any() {
            return Err(ContainerError::Other(format!(
                "resource limits need cgroups, and none are mounted at {}",
                super::cgroups::HOST_ROOT
            )));
        }
        return Ok(None);
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

/// Starts the process once and serves it until it ends. Returns its exit code and, if it
/// could not be started, why.
#[allow(clippy::too_many_arguments)]
fn run_once(
    dir: &Path,
    spec: &StepSpec,
    cfg: &super::ContainerConfig,
    state: &mut State,
    listener: &UnixListener,
    clients: &mut Vec<Client>,
    log: &mut logs::Writer,
    netns: &NetnsSlot,
    cgroup: Option<&Cgroup>,
    ready: &mut Ready,
) -> Result<(i32, Option<String>)> {
    let io_err = |e: io::Error| ContainerError::Other(format!("container stdio: {e}"));
    // The container's ends, handed to the run thread; ours stay here.
    let mut theirs: Vec<OwnedFd> = Vec::new();
    let mut stdio = if cfg.tty {
        // The console comes from the container's own devpts once it exists (Event::Console).
        Stdio {
            outputs: Vec::new(),
            stdin: None,
            master: None,
        }
    } else {
        let (out_r, out_w) = pipe().map_err(io_err)?;
        let (err_r, err_w) = pipe().map_err(io_err)?;
        let stdin = if cfg.open_stdin {
            let (in_r, in_w) = pipe().map_err(io_err)?;
            theirs.push(in_r);
            Some(in_w)
        } else {
            None
        };
        theirs.push(out_w);
        theirs.push(err_w);
        Stdio {
            outputs: vec![(out_r, 1), (err_r, 2)],
            stdin,
            master: None,
        }
    };

    let (tx, rx) = mpsc::channel::<Event>();
    let (wake_r, wake_w) = pipe().map_err(io_err)?;
    let spec_t = spec.clone();
    let tty = cfg.tty;
    let open_stdin = cfg.open_stdin;
    let net_mode = cfg.network;
    let netns_t = netns.clone();
    let dir_t = dir.to_path_buf();
    let cgroup_t = cgroup.cloned();
    let runner = std::thread::spawn(move || {
        let wake = fs::File::from(wake_w);
        let tx2 = tx.clone();
        let mut on_start = |pid: libc::pid_t, fd: BorrowedFd<'_>| {
            if let Ok(fd) = dup(fd) {
                let _ = tx2.send(Event::Started(pid, fd));
                let _ = (&wake).write_all(b"s");
            }
        };
        let tx3 = tx.clone();
        let mut on_console = |master: OwnedFd| {
            let _ = tx3.send(Event::Console(master));
            let _ = (&wake).write_all(b"c");
        };
        let network = net_mode;
        let netns = netns_t;
        let dir = dir_t;
        let mut pasta: Option<Pasta> = None;
        let mut on_ready = |pid: libc::pid_t| -> io::Result<()> {
            // Before the command runs: it is in its cgroup, under its limits, from its
            // first instruction (and so is everything it starts).
            if let Some(cg) = &cgroup_t {
                cg.add(pid).map_err(|e| io::Error::other(e.to_string()))?;
            }
            // Published ports reach it and its outbound network is up from the start.
            if network != Network::Host {
                if let Ok(ns) = fs::File::open(format!("/proc/{pid}/ns/net")) {
                    if let Ok(mut slot) = netns.lock() {
                        *slot = Some(Arc::new(OwnedFd::from(ns)));
                    }
                }
                if network == Network::Pasta {
                    pasta = start_pasta(&dir, pid);
                }
            }
            Ok(())
        };
        let (stdin, stdout, stderr) = if tty {
            (Input::Null, Output::Null, Output::Null)
        } else if open_stdin {
            (
                Input::Fd(theirs[0].as_fd()),
                Output::Fd(theirs[1].as_fd()),
                Output::Fd(theirs[2].as_fd()),
            )
        } else {
            (
                Input::Null,
                Output::Fd(theirs[0].as_fd()),
                Output::Fd(theirs[1].as_fd()),
            )
        };
        let res = executor::run_step(
            &spec_t,
            StepIo {
                stdin,
                stdout,
                stderr,
                on_start: Some(&mut on_start),
                console: if tty { Some(&mut on_console) } else { None },
                on_ready: Some(&mut on_ready),
            },
        );
        drop(theirs);
        // pasta ends with the container (and, by its death signal, with this thread).
        drop(pasta);
        let (res, step_dir) = match res {
            Ok(o) => (Ok(o.status), o.step_dir),
            Err(e) => (Err(e), PathBuf::new()),
        };
        let _ = tx.send(Event::Done(res, step_dir));
        let _ = (&wake).write_all(b"d");
    });

    let mut done: Option<(std::result::Result<ExitStatus, ExecError>, PathBuf)> = None;
    let mut pidfd: Option<OwnedFd> = None;
    // Stops with this run of the container (dropped when run_once returns).
    let mut _health: Option<super::health::Checker> = None;
    // The last size a client asked for, applied to a console that comes later.
    let mut size: Option<(u16, u16)> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Events first: the state must say "running" before anyone is told.
        while let Ok(ev) = rx.try_recv() {
            match ev {
                Event::Started(pid, fd) => {
                    state.status = Status::Running;
                    state.pid = pid;
                    state.pid_start = super::process_start(pid).unwrap_or(0);
                    state.started_at = super::now();
                    state.exit_code = 0;
                    state.error.clear();
                    super::write_state(dir, state)?;
                    if let (Some(hc), Ok(fd2)) = (&cfg.healthcheck, dup(fd.as_fd())) {
                        _health = Some(super::health::start(dir, cfg, hc, fd2));
                    }
                    pidfd = Some(fd);
                    ready.started();
                }
                Event::Console(master) => {
                    if let Some((rows, cols)) = size {
                        resize(master.as_raw_fd(), rows, cols);
                    }
                    stdio.stdin = dup(master.as_fd()).ok();
                    stdio.master = dup(master.as_fd()).ok();
                    stdio.outputs.push((master, 1));
                }
                Event::Done(res, step_dir) => done = Some((res, step_dir)),
            }
        }
        if done.is_some() && stdio.outputs.is_empty() {
            break;
        }
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let pfd = |fd: RawFd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        fds.push(pfd(wake_r.as_raw_fd()));
        fds.push(pfd(listener.as_raw_fd()));
        for (fd, _) in &stdio.outputs {
            fds.push(pfd(fd.as_raw_fd()));
        }
        let nout = stdio.outputs.len();
        for c in clients.iter() {
            fds.push(pfd(c.sock.as_raw_fd()));
        }
        // Once the process is gone, only drain what is left.
        let timeout = if done.is_some() { 200 } else { -1 };
        // SAFETY: valid pollfd array.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if r < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(io_err(io::Error::last_os_error()));
        }
        if r == 0 && done.is_some() {
            // Output ends that will never report EOF (a pty whose slave someone still
            // holds): give up on them.
            stdio.outputs.clear();
            continue;
        }
        if fds[0].revents != 0 {
            let mut b = [0u8; 16];
            // SAFETY: valid buffer.
            unsafe { libc::read(wake_r.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
        }
        // Accepted now, served from the next round (fds has no slot for it yet).
        let newcomer = if fds[1].revents != 0 {
            accept(listener)
        } else {
            None
        };
        let mut closed_outputs = Vec::new();
        for i in 0..nout {
            if fds[2 + i].revents == 0 {
                continue;
            }
            let (fd, stream) = &stdio.outputs[i];
            // SAFETY: valid buffer.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                closed_outputs.push(i);
                continue;
            }
            let data = &buf[..n as usize];
            log.write(*stream, data);
            clients.retain_mut(|c| {
                let wanted = if *stream == 2 {
                    c.streams.stderr
                } else {
                    c.streams.stdout
                };
                if !wanted {
                    return true;
                }
                let f = if *stream == 2 {
                    Frame::Stderr(data.to_vec())
                } else {
                    Frame::Stdout(data.to_vec())
                };
                f.write_to(&mut c.sock).is_ok()
            });
        }
        for i in closed_outputs.into_iter().rev() {
            stdio.outputs.remove(i);
        }
        // Client input.
        let mut gone = Vec::new();
        for (k, c) in clients.iter_mut().enumerate() {
            if fds[2 + nout + k].revents == 0 {
                continue;
            }
            match Frame::read_from(&mut c.sock) {
                Ok(Some(Frame::Stdin(data))) if c.streams.stdin => {
                    if let Some(w) = &stdio.stdin {
                        if write_fd(w.as_raw_fd(), &data).is_err() {
                            stdio.stdin = None;
                        }
                    }
                }
                Ok(Some(Frame::StdinClose)) if c.streams.stdin && !cfg.tty => {
                    stdio.stdin = None;
                }
                Ok(Some(Frame::Resize(rows, cols))) => {
                    size = Some((rows, cols));
                    if let Some(m) = &stdio.master {
                        resize(m.as_raw_fd(), rows, cols);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    gone.push(k);
                    // `run -i`: the attached client's stdin ends when it leaves.
                    if c.streams.stdin && cfg.stdin_once && !cfg.tty {
                        stdio.stdin = None;
                    }
                }
            }
        }
        for k in gone.into_iter().rev() {
            clients.remove(k);
        }
        clients.extend(newcomer);
    }
    log.flush();
    let _ = runner.join();
    drop(pidfd);
    if let Ok(mut slot) = netns.lock() {
        *slot = None;
    }
    let Some((res, step_dir)) = done else {
        return Err(ContainerError::Other(
            "the container's run thread vanished".into(),
        ));
    };
    if !step_dir.as_os_str().is_empty() {
        let _ = executor::remove_step_dir(&step_dir);
    }
    match res {
        Ok(ExitStatus::Code(c)) => Ok((c, None)),
        Ok(ExitStatus::Signal(s)) => Ok((128 + s, None)),
        Err(e) => {
            let code = start_failure_code(&e);
            let msg = format!("failed to create task for container: {e}");
            state.error = msg.clone();
            ready.error(code, &msg);
            Ok((code, Some(msg)))
        }
    }
}

fn write_fd(fd: RawFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: valid buffer.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
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

fn accept(listener: &UnixListener) -> Option<Client> {
    let (mut sock, _) = listener.accept().ok()?;
    let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
    let hello = Frame::read_from(&mut sock).ok().flatten();
    let _ = sock.set_read_timeout(None);
    // A client that stops reading must not stall the container's output forever.
    let _ = sock.set_write_timeout(Some(Duration::from_secs(5)));
    match hello {
        Some(Frame::Hello(streams)) => Some(Client { sock, streams }),
        _ => None,
    }
}

/// `--network pasta`: outbound access through `pasta` (Debian package `passt`), with the
/// gateway address mapped to the host's loopback (podman's `host.containers.internal`).
/// Without it the container still runs, with no outbound network, and says so.
fn start_pasta(dir: &Path, pid: libc::pid_t) -> Option<Pasta> {
    let opts = PastaOptions {
        gateway_to_host: true,
        dns_forward: false,
    };
    match Pasta::start_for(pid, opts) {
        Ok(p) => Some(p),
        Err(e) => {
            let _ = fs::write(
                dir.join("monitor.err"),
                format!("{e}; the container has no outbound network\n"),
            );
            None
        }
    }
}

/// `name` looked up in `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
