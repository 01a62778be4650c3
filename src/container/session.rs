//! One run of a container's process under its monitor: the process started on a thread of
//! its own, and its stdio relayed to the log and to attached clients until it ends.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::attach::{Frame, Streams};
use super::cgroups::Cgroup;
use super::logs;
use super::monitor::{pipe, resize, start_failure_code, start_failure_message, Ready};
use super::ports::NetnsSlot;
use super::{ContainerConfig, ContainerError, Network, Result, State, Status};
use crate::executor::pasta::{Pasta, PastaOptions};
use crate::executor::{self, ExecError, ExitStatus, Input, Output, StepIo, StepSpec};

/// What one run needs that does not change between runs.
pub(super) struct Session<'a> {
    /// The container's directory.
    pub dir: &'a Path,
    /// What to run.
    pub spec: &'a StepSpec,
    /// The container's configuration.
    pub cfg: &'a ContainerConfig,
    /// The attach socket.
    pub listener: &'a UnixListener,
    /// Where the published-port forwarders find the container's network namespace.
    pub netns: &'a NetnsSlot,
    /// The container's cgroup, if it has one.
    pub cgroup: Option<&'a Cgroup>,
}

/// An attached client.
pub(super) struct Client {
    sock: UnixStream,
    streams: Streams,
}

/// What the run thread tells the I/O loop.
enum Event {
    Started(libc::pid_t, OwnedFd),
    Console(OwnedFd),
    Done(std::result::Result<ExitStatus, ExecError>, PathBuf),
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

/// The I/O loop's view of the run, between polls.
struct Relay {
    stdio: Stdio,
    events: mpsc::Receiver<Event>,
    /// Read end of the pipe the run thread writes a byte to with each event.
    wake: OwnedFd,
    done: Option<(std::result::Result<ExitStatus, ExecError>, PathBuf)>,
    pidfd: Option<OwnedFd>,
    /// Stops with this run of the container (dropped with the relay).
    _health: Option<super::health::Checker>,
    /// The last size a client asked for, applied to a console that comes later.
    size: Option<(u16, u16)>,
    buf: Vec<u8>,
}

fn stdio_err(e: io::Error) -> ContainerError {
    ContainerError::Stdio(e)
}

impl Session<'_> {
    /// Starts the process once and serves it until it ends. Returns its exit code and, if
    /// it could not be started, why.
    pub(super) fn run_once(
        &self,
        state: &mut State,
        clients: &mut Vec<Client>,
        log: &mut logs::Writer,
        ready: &mut Ready,
    ) -> Result<(i32, Option<String>)> {
        let (stdio, theirs) = open_stdio(self.cfg)?;
        let (tx, rx) = mpsc::channel::<Event>();
        let (wake_r, wake_w) = pipe().map_err(stdio_err)?;
        // The size of an attached terminal, set on the console before the command runs.
        let size = clients.iter().find_map(|c| c.streams.size);
        let runner = self.spawn_runner(theirs, tx, wake_w, size);
        let mut relay = Relay {
            stdio,
            events: rx,
            wake: wake_r,
            done: None,
            pidfd: None,
            _health: None,
            size,
            buf: vec![0u8; 64 * 1024],
        };
        loop {
            // Events first: the state must say "running" before anyone is told.
            relay.take_events(self, state, ready)?;
            if relay.done.is_some() && relay.stdio.outputs.is_empty() {
                break;
            }
            relay.poll_once(self, clients, log)?;
        }
        log.flush();
        let _ = runner.join();
        drop(relay.pidfd.take());
        if let Ok(mut slot) = self.netns.lock() {
            *slot = None;
        }
        let Some((res, step_dir)) = relay.done.take() else {
            return Err(ContainerError::Other(
                "the container's run thread vanished".into(),
            ));
        };
        if !step_dir.as_os_str().is_empty() {
            let _ = executor::remove_step_dir(&step_dir);
        }
        Ok(outcome(res))
    }

    /// Runs the container's process on a thread of its own, which reports to the I/O loop
    /// through `tx` and a byte on `wake`. `theirs` are the container's ends of its stdio.
    fn spawn_runner(
        &self,
        theirs: Vec<OwnedFd>,
        tx: mpsc::Sender<Event>,
        wake: OwnedFd,
        size: Option<(u16, u16)>,
    ) -> JoinHandle<()> {
        let spec = self.spec.clone();
        let tty = self.cfg.tty;
        let open_stdin = self.cfg.open_stdin;
        let network = self.cfg.network;
        let netns = self.netns.clone();
        let dir = self.dir.to_path_buf();
        let cgroup = self.cgroup.cloned();
        std::thread::spawn(move || {
            let wake = fs::File::from(wake);
            let tx2 = tx.clone();
            let mut on_start = |pid: libc::pid_t, fd: BorrowedFd<'_>| {
                if let Ok(fd) = fd.try_clone_to_owned() {
                    let _ = tx2.send(Event::Started(pid, fd));
                    let _ = (&wake).write_all(b"s");
                }
            };
            let tx3 = tx.clone();
            let mut on_console = |master: OwnedFd| {
                if let Some((rows, cols)) = size {
                    resize(master.as_raw_fd(), rows, cols);
                }
                let _ = tx3.send(Event::Console(master));
                let _ = (&wake).write_all(b"c");
            };
            let mut pasta: Option<Pasta> = None;
            let mut on_ready = |pid: libc::pid_t| -> io::Result<()> {
                prepare_process(pid, cgroup.as_ref(), network, &netns, &dir, &mut pasta)
            };
            let (stdin, stdout, stderr) = process_stdio(&theirs, tty, open_stdin);
            let res = executor::run_step(
                &spec,
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
        })
    }
}

/// The monitor's ends of the container's stdio, and the container's ends (stdin if open,
/// stdout, stderr). With a tty there are none yet: the console comes from the container's
/// own devpts once it exists (`Event::Console`).
fn open_stdio(cfg: &ContainerConfig) -> Result<(Stdio, Vec<OwnedFd>)> {
    let mut theirs: Vec<OwnedFd> = Vec::new();
    if cfg.tty {
        let stdio = Stdio {
            outputs: Vec::new(),
            stdin: None,
            master: None,
        };
        return Ok((stdio, theirs));
    }
    let (out_r, out_w) = pipe().map_err(stdio_err)?;
    let (err_r, err_w) = pipe().map_err(stdio_err)?;
    let stdin = if cfg.open_stdin {
        let (in_r, in_w) = pipe().map_err(stdio_err)?;
        theirs.push(in_r);
        Some(in_w)
    } else {
        None
    };
    theirs.push(out_w);
    theirs.push(err_w);
    let stdio = Stdio {
        outputs: vec![(out_r, 1), (err_r, 2)],
        stdin,
        master: None,
    };
    Ok((stdio, theirs))
}

/// The process's stdio from the container's ends made by [`open_stdio`].
fn process_stdio(
    theirs: &[OwnedFd],
    tty: bool,
    open_stdin: bool,
) -> (Input<'_>, Output<'_>, Output<'_>) {
    if tty {
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
    }
}

/// Before the command runs: it is in its cgroup, under its limits, from its first
/// instruction (and so is everything it starts); published ports reach it and its outbound
/// network is up from the start.
fn prepare_process(
    pid: libc::pid_t,
    cgroup: Option<&Cgroup>,
    network: Network,
    netns: &NetnsSlot,
    dir: &Path,
    pasta: &mut Option<Pasta>,
) -> io::Result<()> {
    if let Some(cg) = cgroup {
        cg.add(pid).map_err(io::Error::other)?;
    }
    if network != Network::Host {
        if let Ok(ns) = fs::File::open(format!("/proc/{pid}/ns/net")) {
            if let Ok(mut slot) = netns.lock() {
                *slot = Some(Arc::new(OwnedFd::from(ns)));
            }
        }
        if network == Network::Pasta {
            *pasta = start_pasta(dir, pid);
        }
    }
    Ok(())
}

/// The run's exit code and, if the process could not be started, why in Docker's words
/// (the monitor records it in the state, then tells the CLI).
fn outcome(res: std::result::Result<ExitStatus, ExecError>) -> (i32, Option<String>) {
    match res {
        Ok(ExitStatus::Code(c)) => (c, None),
        Ok(ExitStatus::Signal(s)) => (128 + s, None),
        Err(e) => (start_failure_code(&e), Some(start_failure_message(&e))),
    }
}

impl Relay {
    /// Applies what the run thread reported: the process started (recorded, health checks
    /// begun, the CLI told), its console, or its end.
    fn take_events(&mut self, s: &Session<'_>, state: &mut State, ready: &mut Ready) -> Result<()> {
        while let Ok(ev) = self.events.try_recv() {
            match ev {
                Event::Started(pid, fd) => {
                    state.status = Status::Running;
                    state.pid = pid;
                    state.pid_start = super::process_start(pid).unwrap_or(0);
                    state.started_at = super::now();
                    state.exit_code = 0;
                    state.error.clear();
                    super::write_state(s.dir, state)?;
                    if let (Some(hc), Ok(fd2)) = (&s.cfg.healthcheck, fd.try_clone()) {
                        self._health = Some(super::health::start(s.dir, s.cfg, hc, fd2));
                    }
                    self.pidfd = Some(fd);
                    ready.started();
                }
                Event::Console(master) => {
                    if let Some((rows, cols)) = self.size {
                        resize(master.as_raw_fd(), rows, cols);
                    }
                    self.stdio.stdin = master.try_clone().ok();
                    self.stdio.master = master.try_clone().ok();
                    self.stdio.outputs.push((master, 1));
                }
                Event::Done(res, step_dir) => self.done = Some((res, step_dir)),
            }
        }
        Ok(())
    }

    /// Waits for something to happen (an event, a client, output, client input) and
    /// handles it.
    fn poll_once(
        &mut self,
        s: &Session<'_>,
        clients: &mut Vec<Client>,
        log: &mut logs::Writer,
    ) -> Result<()> {
        let pfd = |fd: RawFd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut fds: Vec<libc::pollfd> =
            vec![pfd(self.wake.as_raw_fd()), pfd(s.listener.as_raw_fd())];
        fds.extend(self.stdio.outputs.iter().map(|(fd, _)| pfd(fd.as_raw_fd())));
        let nout = self.stdio.outputs.len();
        fds.extend(clients.iter().map(|c| pfd(c.sock.as_raw_fd())));
        // Once the process is gone, only drain what is left.
        let timeout = if self.done.is_some() { 200 } else { -1 };
        // SAFETY: valid pollfd array.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(());
            }
            return Err(stdio_err(e));
        }
        if r == 0 && self.done.is_some() {
            // Output ends that will never report EOF (a pty whose slave someone still
            // holds): give up on them.
            self.stdio.outputs.clear();
            return Ok(());
        }
        if fds[0].revents != 0 {
            let mut b = [0u8; 16];
            // SAFETY: valid buffer.
            unsafe { libc::read(self.wake.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
        }
        // Accepted now, served from the next round (fds has no slot for it yet).
        let newcomer = if fds[1].revents != 0 {
            accept(s.listener)
        } else {
            None
        };
        self.relay_output(&fds[2..2 + nout], clients, log);
        self.client_input(&fds[2 + nout..], s.cfg, clients);
        clients.extend(newcomer);
        Ok(())
    }

    /// Reads the outputs that polled readable (`ready`, one per output) into the log and
    /// to the clients that want that stream; drops the outputs that ended.
    fn relay_output(
        &mut self,
        ready: &[libc::pollfd],
        clients: &mut Vec<Client>,
        log: &mut logs::Writer,
    ) {
        let mut closed = Vec::new();
        for (i, p) in ready.iter().enumerate() {
            if p.revents == 0 {
                continue;
            }
            let (fd, stream) = &self.stdio.outputs[i];
            let buf = &mut self.buf;
            // SAFETY: valid buffer.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                closed.push(i);
                continue;
            }
            let data = &buf[..n as usize];
            log.write(*stream, data);
            broadcast(clients, *stream, data);
        }
        for i in closed.into_iter().rev() {
            self.stdio.outputs.remove(i);
        }
    }

    /// Serves the clients that polled readable (`ready`, one per client): their input,
    /// window sizes and departures.
    fn client_input(
        &mut self,
        ready: &[libc::pollfd],
        cfg: &ContainerConfig,
        clients: &mut Vec<Client>,
    ) {
        let mut gone = Vec::new();
        for (k, c) in clients.iter_mut().enumerate() {
            if ready[k].revents == 0 {
                continue;
            }
            match Frame::read_from(&mut c.sock) {
                Ok(Some(Frame::Stdin(data))) if c.streams.stdin => {
                    if let Some(w) = &self.stdio.stdin {
                        if write_fd(w.as_raw_fd(), &data).is_err() {
                            self.stdio.stdin = None;
                        }
                    }
                }
                Ok(Some(Frame::StdinClose)) if c.streams.stdin && !cfg.tty => {
                    self.stdio.stdin = None;
                }
                Ok(Some(Frame::Resize(rows, cols))) => {
                    self.size = Some((rows, cols));
                    if let Some(m) = &self.stdio.master {
                        resize(m.as_raw_fd(), rows, cols);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    gone.push(k);
                    // `run -i`: the attached client's stdin ends when it leaves.
                    if c.streams.stdin && cfg.stdin_once && !cfg.tty {
                        self.stdio.stdin = None;
                    }
                }
            }
        }
        for k in gone.into_iter().rev() {
            clients.remove(k);
        }
    }
}

/// Sends output of `stream` (1 or 2) to the clients that want it; drops those that fail.
fn broadcast(clients: &mut Vec<Client>, stream: u8, data: &[u8]) {
    clients.retain_mut(|c| {
        let wanted = if stream == 2 {
            c.streams.stderr
        } else {
            c.streams.stdout
        };
        if !wanted {
            return true;
        }
        let f = if stream == 2 {
            Frame::Stderr(data.to_vec())
        } else {
            Frame::Stdout(data.to_vec())
        };
        f.write_to(&mut c.sock).is_ok()
    });
}

/// Tells the clients how the run ended, and lets them go.
pub(super) fn farewell(clients: &mut Vec<Client>, code: i32, start_error: Option<&String>) {
    for mut cl in clients.drain(..) {
        if let Some(e) = start_error {
            let _ = Frame::Error(e.clone()).write_to(&mut cl.sock);
        }
        let _ = Frame::Exit(code).write_to(&mut cl.sock);
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

/// Accepts a client and reads its hello (which streams it wants).
pub(super) fn accept(listener: &UnixListener) -> Option<Client> {
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
