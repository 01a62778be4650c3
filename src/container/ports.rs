//! Published ports: the monitor listens on the host port and, for each connection, opens
//! one to the container's port from inside the container's network namespace, then copies
//! bytes both ways. No iptables, no bridge, no root-owned daemon.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::{ContainerError, PortBinding, Result};

/// The network namespace connections go into: set while the container runs.
pub type NetnsSlot = Arc<Mutex<Option<Arc<OwnedFd>>>>;

/// Binds every published port on the host, filling in ports chosen by the kernel (`-p 80`).
pub fn bind(ports: &mut [PortBinding]) -> Result<Vec<(TcpListener, u16)>> {
    let mut out = Vec::with_capacity(ports.len());
    for p in ports.iter_mut() {
        let ip: std::net::IpAddr = p
            .host_ip
            .parse()
            .map_err(|_| ContainerError::Invalid(format!("invalid host address {}", p.host_ip)))?;
        let l = TcpListener::bind(SocketAddr::new(ip, p.host_port)).map_err(|e| {
            ContainerError::Other(format!(
                "driver failed programming external connectivity: Bind for {}:{} failed: {e}",
                p.host_ip, p.host_port
            ))
        })?;
        if p.host_port == 0 {
            p.host_port = l.local_addr().map(|a| a.port()).unwrap_or(0);
        }
        out.push((l, p.container_port));
    }
    Ok(out)
}

/// Serves each listener on its own thread for the life of the process.
pub fn serve(listeners: Vec<(TcpListener, u16)>, netns: NetnsSlot) {
    for (l, port) in listeners {
        let netns = netns.clone();
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

    /// Forwarding into the current namespace (as root, our own netns fd) reaches a server
    /// on loopback, and the reply comes back.
    #[test]
    fn connections_are_forwarded_both_ways() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: setns needs root");
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
