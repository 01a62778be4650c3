//! Published ports: the monitor listens on the host port and, for each connection, opens
//! one to the container's port from inside the container's network namespace, then copies
//! bytes both ways. UDP is relayed per client address: each client gets a socket of its own
//! inside the namespace, whose replies go back to that client, dropped after a quiet
//! [`UDP_IDLE`]. No iptables, no bridge, no root-owned daemon.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::{ContainerError, PortBinding, Result};

/// The network namespace connections go into: set while the container runs.
pub type NetnsSlot = Arc<Mutex<Option<Arc<OwnedFd>>>>;

/// How long a UDP client's relay lives without traffic (Docker's userland proxy: 90 s).
pub const UDP_IDLE: Duration = Duration::from_secs(90);

/// A bound host port.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A UDP socket.
    Udp(UdpSocket),
}

/// Binds every published port on the host, filling in ports chosen by the kernel (`-p 80`).
/// A binding with no host address listens on `0.0.0.0` and, when the host has IPv6, on
/// `[::]` with the same port, as Docker does; `ports` then holds both, so `ps`, `port` and
/// `inspect` show both.
pub fn bind(ports: &mut Vec<PortBinding>) -> Result<Vec<(Listener, u16)>> {
    let ipv6 = host_has_ipv6();
    let mut out = Vec::with_capacity(ports.len());
    let mut bound = Vec::with_capacity(ports.len());
    for p in ports.iter() {
        let any = p.host_ip.is_empty();
        let mut p = p.clone();
        if any {
            p.host_ip = "0.0.0.0".into();
        }
        out.push(bind_one(&mut p, false)?);
        bound.push(p.clone());
        if any && ipv6 {
            let mut p6 = PortBinding {
                host_ip: "::".into(),
                ..p
            };
            match bind_one(&mut p6, true) {
                Ok(l) => {
                    out.push(l);
                    bound.push(p6);
                }
                // IPv6 listed but not usable (disabled by sysctl, say): IPv4 only.
                Err(ContainerError::Bind { source, .. })
                    if matches!(
                        source.raw_os_error(),
                        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }
    *ports = bound;
    Ok(out)
}

/// Whether the host has an IPv6 address (`/proc/net/if_inet6` lists one per line).
pub fn host_has_ipv6() -> bool {
    std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|s| !s.trim().is_empty())
}

/// Binds one host port; `v6only` for the `[::]` twin of a `0.0.0.0` listener, which must not
/// claim IPv4 (Linux's default dual-stack socket would collide with it).
fn bind_one(p: &mut PortBinding, v6only: bool) -> Result<(Listener, u16)> {
    let ip: std::net::IpAddr = p
        .host_ip
        .parse()
        .map_err(|_| ContainerError::Invalid(format!("invalid host address {}", p.host_ip)))?;
    let addr = SocketAddr::new(ip, p.host_port);
    let failed = |source: io::Error| ContainerError::Bind {
        address: format!("{}/{}", p.host_address(), p.proto),
        source,
    };
    let udp = p.proto == "udp";
    let (l, local) = if v6only {
        let fd = v6only_socket(addr, udp).map_err(failed)?;
        if udp {
            let s = UdpSocket::from(fd);
            let a = s.local_addr();
            (Listener::Udp(s), a)
        } else {
            let l = TcpListener::from(fd);
            let a = l.local_addr();
            (Listener::Tcp(l), a)
        }
    } else if udp {
        let s = UdpSocket::bind(addr).map_err(failed)?;
        let a = s.local_addr();
        (Listener::Udp(s), a)
    } else {
        let l = TcpListener::bind(addr).map_err(failed)?;
        let a = l.local_addr();
        (Listener::Tcp(l), a)
    };
    if p.host_port == 0 {
        p.host_port = local.map(|a| a.port()).unwrap_or(0);
    }
    Ok((l, p.container_port))
}

/// An IPv6 socket bound to `addr` with `IPV6_V6ONLY` (and `SO_REUSEADDR`, as std's
/// listeners), listening when TCP. std cannot set an option before binding, hence libc.
fn v6only_socket(addr: SocketAddr, udp: bool) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V6(v6) = addr else {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    };
    let kind = if udp {
        libc::SOCK_DGRAM
    } else {
        libc::SOCK_STREAM
    };
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    // SAFETY: socket() takes no pointers; a non-negative result is a new fd we own.
    let fd = check(unsafe { libc::socket(libc::AF_INET6, kind | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd was just returned by socket() and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for (level, name) in [
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
        (libc::SOL_SOCKET, libc::SO_REUSEADDR),
    ] {
        // SAFETY: the option value points at a live c_int of the length given.
        check(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
    }
    let sa = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: v6.port().to_be(),
        sin6_flowinfo: v6.flowinfo(),
        sin6_addr: libc::in6_addr {
            s6_addr: v6.ip().octets(),
        },
        sin6_scope_id: v6.scope_id(),
    };
    // SAFETY: sa is a valid sockaddr_in6 and the length is its size.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    })?;
    if !udp {
        // SAFETY: listen() on the socket we own; no pointers.
        check(unsafe { libc::listen(fd.as_raw_fd(), 128) })?;
    }
    Ok(fd)
}

/// Serves each listener on its own thread for the life of the process.
pub fn serve(listeners: Vec<(Listener, u16)>, netns: NetnsSlot) {
    for (l, port) in listeners {
        let netns = netns.clone();
        let l = match l {
            Listener::Tcp(l) => l,
            Listener::Udp(s) => {
                thread::spawn(move || relay_udp(s, netns, port));
                continue;
            }
        };
        thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { continue };
                let ns = netns.lock().ok().and_then(|g| g.clone());
                match ns {
                    Some(ns) => {
                        thread::spawn(move || forward(conn, ns, port));
                    }
                    // Not running (between restarts, say): refuse by closing.
                    None => drop(conn),
                }
            }
        });
    }
}

/// Relays datagrams between host clients and the container's UDP `port`.
fn relay_udp(outside: UdpSocket, netns: NetnsSlot, port: u16) {
    let Ok(outside) = outside.try_clone().map(Arc::new) else {
        return;
    };
    let clients: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Default::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = outside.recv_from(&mut buf) else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let known = clients.lock().ok().and_then(|c| c.get(&from).cloned());
        let inside = match known {
            Some(s) => s,
            None => {
                let Some(ns) = netns.lock().ok().and_then(|g| g.clone()) else {
                    continue; // not running: dropped, as a closed port would
                };
                let Ok(s) = udp_inside(ns, port).map(Arc::new) else {
                    continue;
                };
                if let Ok(mut c) = clients.lock() {
                    c.insert(from, s.clone());
                }
                let (s2, out2, clients2) = (s.clone(), outside.clone(), clients.clone());
                thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    let _ = s2.set_read_timeout(Some(UDP_IDLE));
                    while let Ok(n) = s2.recv(&mut buf) {
                        let _ = out2.send_to(&buf[..n], from);
                    }
                    if let Ok(mut c) = clients2.lock() {
                        c.remove(&from);
                    }
                });
                s
            }
        };
        let _ = inside.send(&buf[..n]);
    }
}

/// A UDP socket inside the container's namespace, connected to its `port`: made on a
/// thread of its own that enters the namespace (a socket stays in the namespace it was
/// made in, whichever thread uses it later).
fn udp_inside(ns: Arc<OwnedFd>, port: u16) -> io::Result<UdpSocket> {
    thread::spawn(move || {
        // SAFETY: setns on a valid namespace fd; it affects only this short-lived thread.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let s = UdpSocket::bind(("127.0.0.1", 0))?;
        s.connect(("127.0.0.1", port))?;
        Ok(s)
    })
    .join()
    .map_err(|_| io::Error::other("the UDP set-up thread panicked"))?
}

fn connect_inside(ns: &OwnedFd, port: u16) -> io::Result<TcpStream> {
    // SAFETY: setns on a valid namespace fd; it affects only this (dedicated) thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    )
}

fn forward(outside: TcpStream, ns: Arc<OwnedFd>, port: u16) {
    let inside = match connect_inside(&ns, port) {
        Ok(s) => s,
        Err(_) => return,
    };
    drop(ns);
    let (Ok(mut out_r), Ok(mut in_w)) = (outside.try_clone(), inside.try_clone()) else {
        return;
    };
    let up = thread::spawn(move || {
        let _ = io::copy(&mut out_r, &mut in_w);
        let _ = in_w.shutdown(Shutdown::Write);
    });
    let (mut in_r, mut out_w) = (inside, outside);
    let _ = io::copy(&mut in_r, &mut out_w);
    let _ = out_w.shutdown(Shutdown::Write);
    let _ = up.join();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A port already taken on the host is a typed error that keeps the OS error as its
    /// source, in Docker's words.
    #[test]
    fn a_taken_host_port_is_a_bind_error_with_its_cause() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
        let port = taken.local_addr().expect("address").port();
        let mut ports = vec![PortBinding {
            host_ip: "127.0.0.1".into(),
            host_port: port,
            container_port: 80,
            proto: "tcp".into(),
        }];
        let Err(e) = bind(&mut ports) else {
            panic!("bound a port that is taken");
        };
        assert!(
            matches!(&e, ContainerError::Bind { source, .. } if source.kind() == io::ErrorKind::AddrInUse),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with(&format!(
                "driver failed programming external connectivity: Bind for 127.0.0.1:{port}/tcp failed: "
            )),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    /// Forwarding into the current namespace (as root, our own netns fd) reaches a server
    /// on loopback, and the reply comes back.
    #[test]
    fn connections_are_forwarded_both_ways() {
        if !crate::testutil::require(nix::unistd::geteuid().is_root(), "root (setns)") {
            return;
        }
        let server = TcpListener::bind("127.0.0.1:0").expect("server");
        let sport = server.local_addr().expect("addr").port();
        thread::spawn(move || {
            if let Ok((mut c, _)) = server.accept() {
                let mut buf = [0u8; 5];
                c.read_exact(&mut buf).expect("read");
                c.write_all(
                    &buf.iter()
                        .map(|b| b.to_ascii_uppercase())
                        .collect::<Vec<_>>(),
                )
                .expect("write");
            }
        });
        let mut ports = vec![PortBinding {
            host_ip: "127.0.0.1".into(),
            host_port: 0,
            container_port: sport,
            proto: "tcp".into(),
        }];
        let ls = bind(&mut ports).expect("bind");
        let hport = ports[0].host_port;
        assert_ne!(hport, 0, "the kernel's port is recorded");
        let ns = std::fs::File::open("/proc/self/ns/net").expect("netns");
        let slot: NetnsSlot = Arc::new(Mutex::new(Some(Arc::new(OwnedFd::from(ns)))));
        serve(ls, slot);
        let mut c = TcpStream::connect(("127.0.0.1", hport)).expect("connect");
        c.write_all(b"hello").expect("send");
        let mut got = String::new();
        c.read_to_string(&mut got).expect("reply");
        assert_eq!(got, "HELLO");
    }

    /// UDP: each client's datagrams reach the server through a socket of its own, and the
    /// server's replies come back to the client that sent them.
    #[test]
    fn udp_datagrams_are_relayed_per_client() {
        if !crate::testutil::require(nix::unistd::geteuid().is_root(), "root (setns)") {
            return;
        }
        let server = UdpSocket::bind("127.0.0.1:0").expect("server");
        let sport = server.local_addr().expect("addr").port();
        thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = server.recv_from(&mut buf) {
                let reply: Vec<u8> = buf[..n].iter().map(|b| b.to_ascii_uppercase()).collect();
                let _ = server.send_to(&reply, from);
            }
        });
        let mut ports = vec![PortBinding::parse(&format!("127.0.0.1::{sport}/udp")).expect("p")];
        let ls = bind(&mut ports).expect("bind");
        let hport = ports[0].host_port;
        assert_ne!(hport, 0);
        let ns = std::fs::File::open("/proc/self/ns/net").expect("netns");
        let slot: NetnsSlot = Arc::new(Mutex::new(Some(Arc::new(OwnedFd::from(ns)))));
        serve(ls, slot);
        let clients: Vec<UdpSocket> = (0..2)
            .map(|_| {
                let c = UdpSocket::bind("127.0.0.1:0").expect("client");
                c.connect(("127.0.0.1", hport)).expect("connect");
                c.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                c
            })
            .collect();
        for round in 0..3 {
            for (i, c) in clients.iter().enumerate() {
                let msg = format!("client {i} round {round}");
                c.send(msg.as_bytes()).expect("send");
                let mut buf = [0u8; 64];
                let n = c.recv(&mut buf).expect("reply");
                assert_eq!(&buf[..n], msg.to_uppercase().as_bytes());
            }
        }
    }

    /// `-p 80` with no address: `0.0.0.0` and, on a host with IPv6, `[::]` on the same port
    /// the kernel chose, each reachable (a client only connects: nothing is served).
    #[test]
    fn an_unnamed_address_binds_ipv4_and_ipv6_on_one_port() {
        let mut ports = vec![PortBinding::parse("80").expect("p")];
        let ls = bind(&mut ports).expect("bind");
        let port = ports[0].host_port;
        assert_ne!(port, 0);
        assert_eq!(ports[0].host_ip, "0.0.0.0");
        TcpStream::connect(("127.0.0.1", port)).expect("IPv4");
        if !host_has_ipv6() {
            assert_eq!(ports.len(), 1);
            return;
        }
        assert_eq!(ls.len(), 2);
        assert_eq!(
            ports.iter().map(PortBinding::display).collect::<Vec<_>>(),
            [
                format!("0.0.0.0:{port}->80/tcp"),
                format!("[::]:{port}->80/tcp")
            ]
        );
        TcpStream::connect(("::1", port)).expect("IPv6");
        // The IPv4 address given explicitly stays IPv4 only, as in Docker.
        let mut ports = vec![PortBinding::parse("0.0.0.0::80/udp").expect("p")];
        bind(&mut ports).expect("bind");
        assert_eq!(ports.len(), 1);
    }

    #[test]
    fn a_busy_port_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let mut ports = vec![PortBinding::parse(&format!("127.0.0.1:{port}:80")).expect("p")];
        let err = bind(&mut ports).expect_err("busy");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }
}
