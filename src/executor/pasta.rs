//! Connects a network namespace to the outside through `pasta` (Debian package `passt`): a
//! user-mode TCP/UDP stack that gives the namespace an interface, an address and a default
//! route, and carries its traffic on ordinary sockets of the host. No bridge, no iptables.
//!
//! pasta runs in the foreground as a child of the calling thread, with `PR_SET_PDEATHSIG`:
//! it goes away with [`Pasta`] (dropped), and with kiln's thread if kiln dies first, so no
//! pasta outlives the namespace it serves. The namespace reaches pasta as an inherited fd
//! (`--netns /proc/self/fd/3`): pasta drops its capabilities before opening the namespace
//! and could no longer open another process's `/proc/<pid>/ns/net`. It reports that the
//! namespace is configured by writing its PID to `--pid`, here a pipe (`/proc/self/fd/N`),
//! which it opens only after the interface, address and routes are in place.
//!
//! [`NetPool`] keeps such namespaces, each with its pasta, for the RUN steps of one build:
//! a step joins one (`setns`) instead of making its own and waiting for a pasta, and gives
//! it back once every process of the step is gone.

use std::io::{self, Read, Seek};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The address a namespace sends DNS queries to when pasta forwards them
/// ([`PastaOptions::dns_forward`]); pasta answers them from the host's first resolver.
pub const DNS_FORWARDER: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// How long pasta may take to configure the namespace.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the namespace may reach besides the outside world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PastaOptions {
    /// Map the namespace's gateway address to the host's loopback (pasta's own default,
    /// kept by `kiln run --network pasta` as podman's `host.containers.internal`). Off for
    /// build steps: with it, a RUN step reaches every service listening on the host's
    /// 127.0.0.1 through its gateway.
    pub gateway_to_host: bool,
    /// Forward DNS queries sent to [`DNS_FORWARDER`] to the host's resolver: the namespace's
    /// only nameserver (see [`resolv_conf`]).
    pub dns_forward: bool,
}

impl PastaOptions {
    /// A build step's network: outbound only, DNS through the forwarder, nothing of the
    /// host's loopback.
    pub fn sandbox() -> PastaOptions {
        PastaOptions {
            gateway_to_host: false,
            dns_forward: true,
        }
    }
}

/// Why pasta could not connect a namespace.
#[derive(Debug, thiserror::Error)]
pub enum PastaError {
    /// No `pasta` in `$PATH`.
    #[error(
        "pasta is not installed: RUN steps get their own network through it \
         (apt-get install passt), or build with --network none"
    )]
    NotInstalled,
    /// The namespace or the pipes could not be opened, or pasta not started.
    #[error("starting pasta: {0}")]
    Spawn(#[source] io::Error),
    /// The network pool's thread could not return to its own namespace after making one.
    #[error("leaving a new network namespace: {0}")]
    Stuck(#[source] io::Error),
    /// Rootless: `/dev/net/tun` cannot be opened by the user, so pasta cannot make its
    /// interface in the namespace.
    #[error(
        "rootless RUN steps reach the network through pasta, which needs /dev/net/tun \
         readable and writable by the user (mode 0666, as distributions ship it): {0}; \
         or build with --network host or --network none"
    )]
    NoTun(#[source] io::Error),
    /// pasta exited, or did not come up in time, before the namespace was configured.
    #[error("pasta could not set up the network namespace{}", detail(.0))]
    Failed(String),
}

fn detail(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

/// The `pasta` binary from `$PATH`, if installed.
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join("pasta"))
        .find(|p| p.is_file())
}

/// A running pasta serving one namespace; dropping it stops pasta.
#[derive(Debug)]
pub struct Pasta {
    /// Always `Some` until dropped.
    child: Option<Child>,
    /// Until [`Pasta::ready`]: the read end of the `--pid` pipe, and pasta's stderr.
    starting: Option<(OwnedFd, std::fs::File)>,
}

impl Pasta {
    /// Connects the network namespace of process `pid` (in kiln's PID namespace), and
    /// returns once its interface, address and routes are configured.
    pub fn start_for(pid: libc::pid_t, opts: PastaOptions) -> Result<Pasta, PastaError> {
        let mut p = Pasta::spawn_for(pid, opts)?;
        p.ready()?;
        Ok(p)
    }

    /// Starts connecting the network namespace of process `pid` and returns at once, so
    /// that the caller can go on preparing the process; [`Pasta::ready`] waits for the end.
    pub fn spawn_for(pid: libc::pid_t, opts: PastaOptions) -> Result<Pasta, PastaError> {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(PastaError::Spawn)?;
        Pasta::spawn(ns.as_fd(), opts)
    }

    /// Starts connecting the network namespace `netns` (an open `/proc/<pid>/ns/net`; pasta
    /// holds its own reference once started, so the caller may close it).
    pub fn spawn(netns: BorrowedFd<'_>, opts: PastaOptions) -> Result<Pasta, PastaError> {
        let bin = binary().ok_or(PastaError::NotInstalled)?;
        if super::isolation::in_user_namespace() {
            // The host's root owns the node: in the user namespace only its mode counts.
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .map_err(PastaError::NoTun)?;
        }
        let (ready_r, ready_w) = pipe()?;
        let (ns_fd, ready_fd) = (netns.as_raw_fd(), ready_w.as_raw_fd());
        let errors = memfd()?;
        let mut cmd = Command::new(bin);
        cmd.args(["--foreground", "--quiet", "--config-net", "--netns-only"])
            // Already root; without --runas pasta would switch to "nobody".
            .args(["--runas", "0:0"])
            // No port forwarding in either direction (pasta's default forwards every port
            // bound in the namespace, and every host port to it).
            .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
            .arg("--netns")
            .arg(format!("/proc/self/fd/{ns_fd}"))
            .arg("--pid")
            .arg(format!("/proc/self/fd/{ready_fd}"));
        if !opts.gateway_to_host {
            cmd.arg("--no-map-gw");
        }
        if opts.dns_forward {
            cmd.arg("--dns-forward").arg(DNS_FORWARDER.to_string());
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(errors.try_clone().map_err(PastaError::Spawn)?));
        // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
        // functions (prctl, fcntl) on fds that are open in the child. Only the child's copies
        // of the two fds lose close-on-exec; other processes kiln starts never see them.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0
                    || libc::fcntl(ns_fd, libc::F_SETFD, 0) < 0
                    || libc::fcntl(ready_fd, libc::F_SETFD, 0) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(PastaError::Spawn)?;
        drop(ready_w);
        Ok(Pasta {
            child: Some(child),
            starting: Some((ready_r, errors)),
        })
    }

    /// Waits until pasta has configured the namespace (at once if it already has). On an
    /// error pasta is stopped.
    pub fn ready(&mut self) -> Result<(), PastaError> {
        let Some((ready, errors)) = self.starting.take() else {
            return Ok(());
        };
        self.wait_ready(&ready).map_err(|why| {
            self.kill();
            PastaError::Failed(why.unwrap_or_else(|| read_errors(errors)))
        })
    }

    /// Waits until pasta writes its PID (configured) or exits (failed). `Err(None)`: pasta's
    /// own messages say why.
    fn wait_ready(&mut self, ready: &OwnedFd) -> Result<(), Option<String>> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut buf = [0u8; 32];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Some(format!(
                    "no answer from pasta after {} seconds",
                    READY_TIMEOUT.as_secs()
                )));
            }
            let mut p = libc::pollfd {
                fd: ready.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // Short slices: a copy of the pipe's write end may linger in a container process
            // another thread is cloning, delaying EOF, so pasta's exit is checked as well.
            let slice = left.min(Duration::from_millis(100)).as_millis() as libc::c_int;
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut p, 1, slice) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Some(format!("waiting for pasta: {e}")));
            }
            if n > 0 {
                // SAFETY: valid buffer.
                let r =
                    unsafe { libc::read(ready.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if r > 0 {
                    return Ok(());
                }
                if r == 0 {
                    return Err(None);
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(Some(format!("waiting for pasta: {e}")));
                }
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return Err(None);
            }
        }
    }

    /// Kills pasta and reaps it.
    fn kill(&mut self) {
        self.signal_kill();
        if let Some(child) = self.child.as_mut() {
            let _ = child.wait();
        }
    }

    /// Sends pasta SIGKILL without waiting for it to exit.
    fn signal_kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
        }
    }

    /// Whether pasta still runs (not exited, or exited and not yet noticed).
    fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }
}

impl Drop for Pasta {
    /// Kills pasta. Its exit is reaped on a thread of its own: closing its tap device and
    /// sockets takes the kernel tens of milliseconds (the device's unregistration waits for
    /// RCU grace periods), which a build step need not wait for.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = child.kill();
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let reaper = std::thread::Builder::new()
            .name("pasta-reaper".into())
            .spawn(move || {
                let _ = child.wait();
            });
        if let Err(e) = reaper {
            // The killed pasta stays a zombie until kiln exits.
            tracing::debug!(error = %e, "no thread to reap pasta");
        }
    }
}

/// Network namespaces connected through pasta ([`PastaOptions`] as given), kept for the RUN
/// steps of one build so that a step's network costs a `setns`, not a pasta start and a tap
/// device.
///
/// A namespace is made on first use and lent to one step at a time ([`NetPool::take`]);
/// steps that run at the same time (parallel stages) get one each. A step's sockets and
/// listeners do not outlive it: every process of a step is in its PID namespace, which the
/// kernel empties when the step's PID 1 exits, and the executor returns only once that PID 1
/// is reaped; a [`NetLease`] must not be dropped before. Steps run with Docker's default
/// capabilities, without `CAP_NET_ADMIN`, and `/proc/sys` read-only: they cannot change the
/// namespace's addresses, routes or settings.
///
/// The namespaces are made and their pastas started on a thread of the pool's own, which
/// lives until [`NetPool::close`]: pasta's parent-death signal is tied to the thread that
/// started it, and the steps' threads (one per parallel stage) come and go. So when kiln
/// dies every pasta of the pool dies with it; on a normal end, an error or a cancelled build
/// the owner closes the pool (dropping it closes it too), which kills and reaps every pasta
/// and closes every namespace.
#[derive(Debug)]
pub struct NetPool {
    opts: PastaOptions,
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    /// Namespaces no step uses now.
    idle: Vec<PooledNs>,
    /// The thread that makes namespaces, once one was needed.
    maker: Option<Maker>,
    closed: bool,
}

/// A request to the maker thread: where to send the new namespace.
type Request = mpsc::Sender<Result<PooledNs, PastaError>>;

#[derive(Debug)]
struct Maker {
    requests: mpsc::Sender<Request>,
    thread: JoinHandle<()>,
}

/// One namespace of the pool and the pasta serving it.
#[derive(Debug)]
struct PooledNs {
    netns: Arc<OwnedFd>,
    pasta: Pasta,
}

/// A namespace of a [`NetPool`] lent to one step; dropping it gives it back.
#[derive(Debug)]
pub struct NetLease<'a> {
    pool: &'a NetPool,
    ns: Option<PooledNs>,
}

impl NetLease<'_> {
    /// The namespace, open (`/proc/<pid>/ns/net`): for
    /// [`StepSpec::netns`](super::StepSpec::netns).
    pub fn netns(&self) -> Option<Arc<OwnedFd>> {
        self.ns.as_ref().map(|n| n.netns.clone())
    }
}

impl Drop for NetLease<'_> {
    fn drop(&mut self) {
        if let Some(ns) = self.ns.take() {
            self.pool.give_back(ns);
        }
    }
}

impl NetPool {
    /// An empty pool: nothing runs until the first [`NetPool::take`].
    pub fn new(opts: PastaOptions) -> NetPool {
        NetPool {
            opts,
            state: Mutex::new(PoolState::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connected namespace for one step: an idle one, or a new one (which waits for its
    /// pasta). Give it back by dropping the lease once every process that joined it is gone.
    pub fn take(&self) -> Result<NetLease<'_>, PastaError> {
        let reply = {
            let mut st = self.state();
            if st.closed {
                return Err(PastaError::Failed(
                    "the build's network pool is closed".into(),
                ));
            }
            while let Some(mut ns) = st.idle.pop() {
                if ns.pasta.running() {
                    return Ok(NetLease {
                        pool: self,
                        ns: Some(ns),
                    });
                }
                // Its pasta is gone (killed from outside): that namespace has no way out.
                tracing::debug!("a pooled network namespace lost its pasta; dropping it");
                ns.pasta.kill();
            }
            if binary().is_none() {
                return Err(PastaError::NotInstalled);
            }
            let opts = self.opts;
            if st.maker.is_none() {
                st.maker = Some(Maker::start(opts)?);
            }
            let (tx, rx) = mpsc::channel();
            st.maker
                .as_ref()
                .and_then(|m| m.requests.send(tx).ok())
                .ok_or_else(|| PastaError::Failed("the network pool's thread is gone".into()))?;
            rx
        };
        let mut ns = reply
            .recv()
            .map_err(|_| PastaError::Failed("the network pool's thread is gone".into()))??;
        ns.pasta.ready()?;
        Ok(NetLease {
            pool: self,
            ns: Some(ns),
        })
    }

    fn give_back(&self, mut ns: PooledNs) {
        let mut st = self.state();
        if st.closed {
            drop(st);
            ns.pasta.kill();
        } else {
            st.idle.push(ns);
        }
    }

    /// Kills and reaps every idle namespace's pasta, closes the namespaces and stops the
    /// pool's thread. Namespaces lent out are stopped when given back. Later
    /// [`NetPool::take`]s fail.
    pub fn close(&self) {
        drop(self.close_later());
    }

    /// [`NetPool::close`], with only the killing done at once: the pastas' exits (tens of
    /// milliseconds, the kernel removing each one's tap device) are waited for on another
    /// thread until the returned [`Closing`] is dropped, so the caller can finish other work
    /// meanwhile.
    pub fn close_later(&self) -> Closing {
        let (idle, maker) = {
            let mut st = self.state();
            st.closed = true;
            (std::mem::take(&mut st.idle), st.maker.take())
        };
        if idle.is_empty() && maker.is_none() {
            return Closing(None);
        }
        // All signalled first, so their exits overlap; the namespaces' fds close here.
        let pastas: Vec<Pasta> = idle
            .into_iter()
            .map(|mut ns| {
                ns.pasta.signal_kill();
                ns.pasta
            })
            .collect();
        let teardown = Teardown { pastas, maker };
        // If no thread can be started, the closure (and so the teardown) is dropped here.
        let reaper = std::thread::Builder::new()
            .name("kiln-netpool-close".into())
            .spawn(move || drop(teardown));
        Closing(reaper.ok())
    }

    /// How many namespaces the pool holds idle (for tests).
    pub fn idle(&self) -> usize {
        self.state().idle.len()
    }
}

impl Drop for NetPool {
    fn drop(&mut self) {
        self.close();
    }
}

/// What [`NetPool::close_later`] leaves to finish: done when dropped.
struct Teardown {
    pastas: Vec<Pasta>,
    maker: Option<Maker>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        for p in &mut self.pastas {
            p.kill();
        }
        if let Some(m) = self.maker.take() {
            drop(m.requests);
            let _ = m.thread.join();
        }
    }
}

/// A [`NetPool`] being closed: dropping it waits until every pasta of the pool is reaped.
#[derive(Debug)]
#[must_use = "dropping it at once waits for the pool's pastas"]
pub struct Closing(Option<JoinHandle<()>>);

impl Drop for Closing {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

impl Maker {
    fn start(opts: PastaOptions) -> Result<Maker, PastaError> {
        // This thread's namespace (the host's, for the steps), to come back to after making
        // each new one.
        let own: OwnedFd = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(PastaError::Spawn)?
            .into();
        let (requests, incoming) = mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name("kiln-netpool".into())
            .spawn(move || {
                for reply in incoming {
                    let made = make_namespace(&own, opts);
                    let stuck = matches!(made, Err(PastaError::Stuck(_)));
                    let _ = reply.send(made);
                    if stuck {
                        // Still in the new namespace: no pasta may start from here.
                        return;
                    }
                }
            })
            .map_err(PastaError::Spawn)?;
        Ok(Maker { requests, thread })
    }
}

/// A new network namespace (this thread enters it, opens it and goes back to `own`) and a
/// pasta starting for it (started from `own`, where its sockets must be).
fn make_namespace(own: &OwnedFd, opts: PastaOptions) -> Result<PooledNs, PastaError> {
    if super::isolation::in_user_namespace() {
        let netns = namespace_from_a_thread()?;
        let pasta = Pasta::spawn(netns.as_fd(), opts)?;
        return Ok(PooledNs {
            netns: Arc::new(netns),
            pasta,
        });
    }
    // SAFETY: unshare of this thread's network namespace only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(PastaError::Spawn(io::Error::last_os_error()));
    }
    let ns = std::fs::File::open("/proc/thread-self/ns/net");
    // SAFETY: setns to a namespace fd we hold.
    if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(PastaError::Stuck(io::Error::last_os_error()));
    }
    let netns: OwnedFd = ns.map_err(PastaError::Spawn)?.into();
    let pasta = Pasta::spawn(netns.as_fd(), opts)?;
    Ok(PooledNs {
        netns: Arc::new(netns),
        pasta,
    })
}

/// A new network namespace, made by a short-lived thread that unshares it and opens it. In the
/// rootless user namespace a thread cannot go back to the host's network namespace (owned by
/// the initial user namespace, `setns` needs `CAP_SYS_ADMIN` there), so the thread that made
/// one ends instead.
fn namespace_from_a_thread() -> Result<OwnedFd, PastaError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare of this (throw-away) thread's network namespace only.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(PastaError::Spawn(io::Error::last_os_error()));
            }
            std::fs::File::open("/proc/thread-self/ns/net")
                .map(OwnedFd::from)
                .map_err(PastaError::Spawn)
        })
        .join()
        .unwrap_or_else(|_| {
            Err(PastaError::Spawn(io::Error::other(
                "namespace thread panicked",
            )))
        })
    })
}

/// The resolver configuration for a namespace served with [`PastaOptions::dns_forward`]:
/// the host's, with its nameservers replaced by [`DNS_FORWARDER`], once. pasta sends the
/// queries from the host's own socket to the host's first resolver: a loopback resolver
/// (systemd-resolved's 127.0.0.53) is unreachable from the namespace, and on some hosts UDP
/// from the namespace to the resolver's own address gets no answer while the forwarder's
/// does (seen on the build machine: `apt-get update` in a RUN step could not resolve the
/// mirror). Other lines are kept as they are.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::with_capacity(host.len());
    let mut forwarder = false;
    for line in host.lines() {
        if line.split_whitespace().next() == Some("nameserver") {
            if !forwarder {
                out.push_str(&format!("nameserver {DNS_FORWARDER}\n"));
                forwarder = true;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn read_errors(mut f: std::fs::File) -> String {
    let mut s = String::new();
    let _ = f
        .rewind()
        .and_then(|_| f.take(64 * 1024).read_to_string(&mut s));
    // Without a syslog socket pasta adds one of these to stderr per message.
    s.lines()
        .filter(|l| !l.starts_with("Failed to send") && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn pipe() -> Result<(OwnedFd, OwnedFd), PastaError> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(PastaError::Spawn(io::Error::last_os_error()));
    }
    // SAFETY: pipe2 returned two fresh fds.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// An anonymous file for pasta's messages: read only if it fails, never blocks it.
fn memfd() -> Result<std::fs::File, PastaError> {
    // SAFETY: a NUL-terminated name; the result is a fresh fd we own.
    let n = unsafe { libc::memfd_create(c"pasta-errors".as_ptr(), libc::MFD_CLOEXEC) };
    if n < 0 {
        return Err(PastaError::Spawn(io::Error::last_os_error()));
    }
    // SAFETY: as above.
    Ok(unsafe { std::fs::File::from_raw_fd(n) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_become_the_forwarder_once() {
        let cases = [
            ("nameserver 10.0.0.2\n", "nameserver 169.254.1.1\n"),
            (
                "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n",
                "nameserver 169.254.1.1\noptions edns0 trust-ad\nsearch lan\n",
            ),
            (
                "nameserver 127.0.0.1\nnameserver ::1\nnameserver 192.0.2.53\n",
                "nameserver 169.254.1.1\n",
            ),
            (
                "search lan\nnameserver fe80::1%eth0\n",
                "search lan\nnameserver 169.254.1.1\n",
            ),
            ("# nameserver 127.0.0.1\n", "# nameserver 127.0.0.1\n"),
            ("", ""),
        ];
        for (host, want) in cases {
            assert_eq!(resolv_conf(host), want, "{host:?}");
        }
    }

    // The pool lends each namespace to one step at a time and reuses it once given back;
    // closing it must leave no pasta running or unreaped.
    #[test]
    fn a_pooled_namespace_is_lent_once_at_a_time_and_closing_reaps_its_pasta() {
        if !crate::testutil::root()
            || !crate::testutil::require(binary().is_some(), "pasta (apt-get install passt)")
        {
            return;
        }
        let ino = |l: &NetLease<'_>| {
            let fd = l.netns().expect("netns");
            nix::sys::stat::fstat(&fd).expect("fstat").st_ino
        };
        let pool = NetPool::new(PastaOptions::sandbox());
        let a = pool.take().expect("first namespace");
        let b = pool.take().expect("second namespace");
        let (ia, ib) = (ino(&a), ino(&b));
        assert_ne!(ia, ib, "two steps at once share a namespace");
        drop(a);
        assert_eq!(pool.idle(), 1);
        let again = pool.take().expect("a namespace given back");
        assert_eq!(ino(&again), ia);
        drop((again, b));
        let pids: Vec<u32> = pool
            .state()
            .idle
            .iter()
            .filter_map(|n| n.pasta.child.as_ref().map(Child::id))
            .collect();
        assert_eq!(pids.len(), 2);
        pool.close();
        for pid in pids {
            // Reaped: not even a zombie is left.
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "pasta {pid} outlived the pool"
            );
        }
        assert!(pool.take().is_err(), "a closed pool lends nothing");
    }

    #[test]
    fn a_missing_pasta_is_named_with_its_package() {
        let msg = PastaError::NotInstalled.to_string();
        assert!(msg.contains("apt-get install passt"), "{msg}");
    }
}
