//! The network of RUN steps: by default a namespace of their
//! own with outbound access through pasta and no way to a service on the host's loopback;
//! the host's network only with `--network host` or `--allow network.host`; `--network none`
//! with loopback only.
//!
//! The tests that let a step send traffic run kiln inside a network namespace of the test's
//! own making (a "host" with a veth pair, a default route and one more address), so no packet
//! of theirs can leave this machine: the gateway kiln's pasta sees is a veth peer nobody
//! answers for, and "outbound" means that host's other address.

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::build_cmd::write;
use crate::util::{stderr, stdout, TestStore};

/// The fake host's address on its only link, its gateway (nothing answers there), and a
/// second address of its own that stands for "the outside".
const HOST_ADDR: &str = "10.201.0.2/24";
const GATEWAY: &str = "10.201.0.1";
const OUTSIDE: &str = "10.202.0.7";

/// A store with busybox, or `None` (after saying why) where RUN steps cannot run; under CI
/// every requirement is there, so a missing one fails.
fn setup() -> Option<TestStore> {
    let s = TestStore::new();
    s.busybox("busybox:local")?;
    for t in ["pasta", "ip", "unshare"] {
        crate::util::require::tool(t, "scripts/install-deps.sh installs it")?;
    }
    Some(s)
}

/// A TCP server that answers every connection with `reply` and counts them.
struct Server {
    port: u16,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(addr: &str, reply: &'static str) -> Server {
        let listener = TcpListener::bind((addr, 0)).expect("listen");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, st) = (hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        h.fetch_add(1, Ordering::Relaxed);
                        let _ = c.write_all(reply.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Server {
            port,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ip(args: &str) {
    let st = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .expect("ip");
    assert!(st.success(), "ip {args}");
}

/// Runs `f` on a thread in a new network namespace set up as a small host: `lo`, a veth
/// link with [`HOST_ADDR`] and a default route via [`GATEWAY`], and [`OUTSIDE`] as a second
/// address. Processes the thread starts (kiln, and so pasta) live there too; the namespace
/// and its links go away with the thread and them.
fn on_fake_host<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare of this thread's network namespace only.
                assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
                ip("link set lo up");
                ip("link add kh0 type veth peer name kh1");
                ip("link set kh1 up");
                ip(&format!("addr add {HOST_ADDR} dev kh0"));
                ip(&format!("addr add {OUTSIDE}/32 dev kh0"));
                ip("link set kh0 up");
                ip(&format!("route add default via {GATEWAY} dev kh0"));
                f()
            })
            .join()
            .expect("fake host thread")
    })
}

/// `pasta` processes left in the calling thread's network namespace once kiln is done. A
/// killed pasta takes a moment to close its device and sockets: a bounded wait for that.
fn pastas_left() -> Vec<String> {
    for _ in 0..100 {
        if pastas_here().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    pastas_here()
}

/// `pasta` processes in the calling thread's network namespace (zombies have none). pasta is
/// passt under another name, and Debian's re-executes itself as `passt.avx2` where the CPU
/// has AVX2: any of those names counts.
fn pastas_here() -> Vec<String> {
    let here = std::fs::read_link("/proc/thread-self/ns/net").expect("own netns");
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let p = e.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        let name = comm.trim().split('.').next().unwrap_or_default();
        if (name == "pasta" || name == "passt")
            && std::fs::read_link(p.join("ns/net")).ok() == Some(here.clone())
        {
            found.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

/// Builds the one-step Dockerfile `RUN <run>` with `flags`; returns kiln's output.
fn build(s: &TestStore, run: &str, flags: &[&str]) -> Output {
    let ctx = s.dir.path().join("ctx");
    write(
        &ctx,
        "Dockerfile",
        &format!("FROM busybox:local\nRUN {run}\n"),
    );
    let mut args = vec!["build", "--progress=plain", "--no-cache"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["-t", "net:1", "."]);
    s.kiln(&ctx, &args, None)
}

fn text(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

// kiln ran RUN steps in the host's network namespace by default: a Dockerfile reached any
// service on the host's loopback (Docker's builder gets "connection refused").
#[test]
fn run_steps_reach_no_service_on_the_hosts_loopback_by_default() {
    let Some(s) = setup() else { return };
    on_fake_host(|| {
        let secret = Server::start("127.0.0.1", "kiln-loopback-secret\n");
        let port = secret.port;
        // Both ways in: the namespace's own 127.0.0.1, and its gateway, which pasta maps to
        // the host's loopback unless told not to.
        let probe = format!(
            "gw=$(ip route | awk '/^default/ {{print $3}}'); echo \"gateway=$gw\"; \
             timeout 5 nc 127.0.0.1 {port} </dev/null; \
             [ -n \"$gw\" ] && timeout 5 nc -w 3 $gw {port} </dev/null; echo probed"
        );
        let o = build(&s, &probe, &[]);
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        assert!(out.contains("probed"), "{out}");
        assert!(out.contains(&format!("gateway={GATEWAY}")), "{out}");
        assert!(!out.contains("kiln-loopback-secret"), "{out}");
        assert_eq!(secret.hits(), 0, "a RUN step reached the host's loopback");
        assert_eq!(
            pastas_left(),
            Vec::<String>::new(),
            "pasta outlived the step"
        );

        // `--network host` asks for the host's network, loopback included.
        let o = build(&s, &probe, &["--network", "host"]);
        assert!(text(&o).contains("kiln-loopback-secret"), "{}", text(&o));
        assert!(secret.hits() >= 1);
    });
}

// RUN --network=host is BuildKit's network.host entitlement: a Dockerfile alone must not be
// able to take the host's network.
#[test]
fn run_network_host_needs_the_network_host_entitlement() {
    let Some(s) = setup() else { return };
    on_fake_host(|| {
        let secret = Server::start("127.0.0.1", "kiln-loopback-secret\n");
        let run = format!(
            "--network=host timeout 5 nc 127.0.0.1 {} </dev/null; echo probed",
            secret.port
        );
        let o = build(&s, &run, &[]);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(
            stderr(&o).contains("network.host is not allowed")
                && stderr(&o).contains("--allow network.host"),
            "{}",
            stderr(&o)
        );
        assert_eq!(secret.hits(), 0);

        let o = build(&s, &run, &["--allow", "network.host"]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("kiln-loopback-secret"), "{}", text(&o));
        // `--network host` grants it as well (as buildx does).
        let o = build(&s, &run, &["--network", "host"]);
        assert!(text(&o).contains("kiln-loopback-secret"), "{}", text(&o));
    });
}

#[test]
fn run_steps_have_outbound_access_through_pasta() {
    let Some(s) = setup() else { return };
    on_fake_host(|| {
        // An address of this host other than loopback stands for the outside.
        let outside = Server::start(OUTSIDE, "kiln-reached-outside\n");
        let run = format!(
            "ls /sys/class/net; ip route; timeout 5 nc {OUTSIDE} {} </dev/null; echo probed",
            outside.port
        );
        let o = build(&s, &run, &[]);
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        assert!(out.contains("kiln-reached-outside"), "{out}");
        assert!(out.contains(&format!("default via {GATEWAY}")), "{out}");
        assert!(outside.hits() >= 1);
        assert_eq!(
            pastas_left(),
            Vec::<String>::new(),
            "pasta outlived the step"
        );
    });
}

#[test]
fn run_steps_resolve_names_through_the_hosts_loopback_resolver() {
    let Some(s) = setup() else { return };
    on_fake_host(|| {
        // The host's resolver listens on its loopback (systemd-resolved's address); the
        // step's resolv.conf must name pasta's forwarder instead.
        let dns = UdpSocket::bind("127.0.0.53:53").expect("bind resolver");
        dns.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, st) = (queries.clone(), stop.clone());
        let resolver = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !st.load(Ordering::Relaxed) {
                if let Ok((n, from)) = dns.recv_from(&mut buf) {
                    if n < 12 {
                        continue;
                    }
                    q.fetch_add(1, Ordering::Relaxed);
                    // The question back, flagged as a response with NXDOMAIN.
                    let mut r = buf[..n].to_vec();
                    r[2] = 0x81;
                    r[3] = 0x83;
                    let _ = dns.send_to(&r, from);
                }
            }
        });
        let resolv = s.dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 127.0.0.53\noptions edns0\n").expect("resolv");
        let ctx = s.dir.path().join("ctx");
        write(
            &ctx,
            "Dockerfile",
            "FROM busybox:local\n\
             RUN cat /etc/resolv.conf; timeout 10 nslookup kiln-test.invalid; echo probed\n",
        );
        // kiln (and its pasta) see the host's resolv.conf above, in a mount namespace of
        // their own.
        let o = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount --bind \"$1\" /etc/resolv.conf && shift && exec \"$@\"")
            .arg("sh")
            .arg(&resolv)
            .arg(env!("CARGO_BIN_EXE_kiln"))
            .args([
                "build",
                "--progress=plain",
                "--no-cache",
                "-t",
                "dns:1",
                ".",
            ])
            .current_dir(&ctx)
            .env("KILN_ROOT", s.root())
            .output()
            .expect("unshare");
        stop.store(true, Ordering::Relaxed);
        resolver.join().expect("resolver thread");
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        assert!(out.contains("nameserver 169.254.1.1"), "{out}");
        assert!(!out.contains("nameserver 127.0.0.53"), "{out}");
        assert!(out.contains("probed"), "{out}");
        assert!(
            queries.load(Ordering::Relaxed) >= 1,
            "no query reached the host's resolver:\n{out}"
        );
    });
}

#[test]
fn network_none_has_only_loopback() {
    let Some(s) = setup() else { return };
    let o = build(&s, "ls /sys/class/net > /links", &["--network", "none"]);
    assert!(o.status.success(), "{}", text(&o));
    let links = std::fs::read_to_string(s.unpack("net:1").join("links")).expect("links");
    assert_eq!(links, "lo\n");
}

#[test]
fn a_missing_pasta_fails_the_step_naming_the_package() {
    let Some(s) = setup() else { return };
    let ctx = s.dir.path().join("ctx");
    write(&ctx, "Dockerfile", "FROM busybox:local\nRUN true\n");
    // A $PATH without pasta (kiln needs nothing else from it for this build).
    let empty = s.dir.path().join("empty-path");
    std::fs::create_dir_all(&empty).expect("dir");
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--progress=plain", "-t", "nopasta:1", "."])
        .current_dir(&ctx)
        .env("KILN_ROOT", s.root())
        .env("PATH", &empty)
        .output()
        .expect("kiln");
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        stderr(&o).contains("apt-get install passt"),
        "{}",
        stderr(&o)
    );
    // Without a network of its own the step needs no pasta.
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--network", "none", "-t", "nopasta:1", "."])
        .current_dir(&ctx)
        .env("KILN_ROOT", s.root())
        .env("PATH", &empty)
        .output()
        .expect("kiln");
    assert!(o.status.success(), "{}", text(&o));
}

/// What an in-process build showed: its output lines, and the pastas (PIDs) that ran in the
/// calling thread's network namespace while a step printed.
#[derive(Default)]
struct Watch {
    lines: std::sync::Mutex<Vec<String>>,
    pastas_seen: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Set when a step prints `cancel-me` (Ctrl-C's flag).
    cancel: Arc<AtomicBool>,
}

impl kiln::build::Progress for Watch {
    fn event(&self, e: kiln::build::BuildEvent) {
        if let kiln::build::BuildEvent::Output { text, .. } = e {
            // Progress events arrive on the build's threads, in the build's namespace.
            self.pastas_seen.lock().expect("pids").extend(pastas_here());
            if text.contains("cancel-me") {
                self.cancel.store(true, Ordering::SeqCst);
            }
            self.lines.lock().expect("lines").push(text);
        }
    }
}

impl Watch {
    /// The pastas seen during the build that still exist, running or not yet reaped (a
    /// zombie keeps its name).
    fn pastas_not_reaped(&self) -> Vec<String> {
        let seen = self.pastas_seen.lock().expect("pids");
        assert_eq!(seen.len(), 1, "one pasta serves the build's steps");
        seen.iter()
            .filter(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                comm.starts_with("pasta") || comm.starts_with("passt")
            })
            .cloned()
            .collect()
    }
}

/// Builds `dockerfile` through the library, on the calling thread (so its pool's pastas are
/// in the calling thread's network namespace).
fn build_in_process(
    s: &TestStore,
    dockerfile: &str,
) -> (
    Result<kiln::build::BuildResult, kiln::build::BuildError>,
    Watch,
) {
    let ctx = s.dir.path().join("ctx-lib");
    std::fs::create_dir_all(&ctx).expect("ctx");
    let store = kiln::store::Store::open(s.root()).expect("store");
    let watch = Watch::default();
    let req = kiln::build::BuildRequest {
        context_dir: ctx,
        dockerfile: dockerfile.as_bytes().to_vec(),
        dockerfile_name: "Dockerfile".into(),
        no_cache: true,
        cancel: Some(watch.cancel.clone()),
        ..Default::default()
    };
    let r = kiln::build::build(&store, &req, &watch);
    (r, watch)
}

// With the network namespaces pooled per build, a listener a step leaves running would be
// there for the next step: the step's PID namespace (emptied when its PID 1 exits) is what
// must take it away before the namespace is lent again.
#[test]
fn a_listener_left_by_one_run_step_is_gone_for_the_next() {
    let Some(s) = setup() else { return };
    on_fake_host(|| {
        let ctx = s.dir.path().join("ctx");
        write(
            &ctx,
            "Dockerfile",
            "FROM busybox:local\n\
             RUN mkdir -p /tmp/www && echo kiln-leaked-listener > /tmp/www/index.html \
                 && httpd -p 127.0.0.1:9999 -h /tmp/www \
                 && wget -q -O- http://127.0.0.1:9999/ | sed 's/^/first: /' \
                 && echo \"first-netns=$(readlink /proc/self/ns/net)\"\n\
             RUN echo \"second-netns=$(readlink /proc/self/ns/net)\"; \
                 if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc 127.0.0.1 9999; \
                 then r=reached; else r=refused; fi; echo \"probe:$r\"\n",
        );
        let o = s.kiln(
            &ctx,
            &[
                "build",
                "--progress=plain",
                "--no-cache",
                "-t",
                "net:1",
                ".",
            ],
            None,
        );
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        // The listener was up in the first step...
        assert!(out.contains("first: kiln-leaked-listener"), "{out}");
        // ...and the second step ran in the same (pooled) namespace...
        let netns = |tag: &str| {
            out.lines()
                .find_map(|l| {
                    l.split_once(&format!("{tag}net:["))
                        .map(|(_, v)| v.trim().to_string())
                })
                .unwrap_or_else(|| panic!("no {tag} in:\n{out}"))
        };
        assert_eq!(netns("first-netns="), netns("second-netns="), "{out}");
        // ...where nothing listens any more.
        assert!(out.contains("probe:refused"), "{out}");
        assert!(!out.contains("probe:reached"), "{out}");
        assert_eq!(out.matches("kiln-leaked-listener").count(), 2, "{out}");
        assert_eq!(pastas_left(), Vec::<String>::new(), "pasta outlived kiln");
    });
}

// The pool's pastas belong to the build: gone (killed and reaped) when the build returns,
// whether it succeeded, failed or was cancelled — not only when kiln exits.
#[test]
fn a_builds_pooled_pastas_are_gone_when_it_returns() {
    let Some(s) = setup() else { return };
    on_fake_host(|| {
        let (r, watch) = build_in_process(
            &s,
            "FROM busybox:local\nRUN ip route\nRUN echo two > /two\n",
        );
        let lines = watch.lines.lock().expect("lines").join("\n");
        assert!(r.is_ok(), "{r:?}\n{lines}");
        assert!(lines.contains(&format!("default via {GATEWAY}")), "{lines}");
        assert_eq!(
            watch.pastas_not_reaped(),
            Vec::<String>::new(),
            "after a build"
        );
        assert_eq!(pastas_here(), Vec::<String>::new(), "after a build");

        let (r, watch) = build_in_process(&s, "FROM busybox:local\nRUN echo one\nRUN false\n");
        assert!(r.is_err(), "RUN false must fail the build");
        assert_eq!(
            watch.pastas_not_reaped(),
            Vec::<String>::new(),
            "after a failed build"
        );
        assert_eq!(pastas_here(), Vec::<String>::new(), "after a failed build");

        // Ctrl-C: the flag the signal handler sets, set while the step runs.
        let (r, watch) = build_in_process(&s, "FROM busybox:local\nRUN echo cancel-me; sleep 60\n");
        assert!(watch.cancel.load(Ordering::SeqCst));
        assert!(r.is_err(), "a cancelled build must fail");
        assert_eq!(
            watch.pastas_not_reaped(),
            Vec::<String>::new(),
            "after a cancelled build"
        );
        assert_eq!(
            pastas_here(),
            Vec::<String>::new(),
            "after a cancelled build"
        );
    });
}
