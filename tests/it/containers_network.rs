//! Containers end to end: networks — private, host and none, pasta, published ports.
//! Every test removes its containers (`rm -f`) when it ends, even when it fails.

use std::io::Write;
use std::net::TcpStream;

use super::containers::*;
use super::util::stderr;

#[test]
fn web_server_built_by_kiln_serves_through_a_published_port() {
    let Some(e) = Env::new() else { return };
    e.build(
        "web:1",
        "FROM busybox:local\nRUN mkdir /www && echo '<h1>served by kiln</h1>' > /www/index.html\n\
         EXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
        &[],
    );
    let id = e.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "127.0.0.1::8080",
        "web:1",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    let v = e.wait_for("web", 10, running);
    let port = host_port(&v, "8080/tcp");
    let page = http_get(port, "/");
    assert!(page.contains("200 OK"), "{page}");
    assert!(page.contains("<h1>served by kiln</h1>"), "{page}");
    // Two connections at once both work.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| http_get(port, "/index.html"));
        let b = s.spawn(|| http_get(port, "/index.html"));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.contains("served by kiln") && b.contains("served by kiln"));
    assert!(http_get(port, "/missing").contains("404"));

    let ps = e.ok(&["ps"]);
    assert!(ps.contains(&format!("127.0.0.1:{port}->8080/tcp")), "{ps}");
    assert!(ps.contains("web:1") && ps.contains("Up "), "{ps}");
    assert_eq!(
        v["Config"]["ExposedPorts"]["8080/tcp"],
        serde_json::json!({})
    );
    assert_eq!(v["Id"], id);

    // exec sees the container's processes and files, with -e, -w and -u.
    let procs = e.ok(&["exec", "web", "ps", "-o", "pid,args"]);
    assert!(
        procs
            .lines()
            .any(|l| l.trim().starts_with("1 ") && l.contains("httpd")),
        "{procs}"
    );
    assert_eq!(
        e.ok(&["exec", "web", "cat", "/www/index.html"]).trim(),
        "<h1>served by kiln</h1>"
    );
    assert_eq!(
        e.ok(&[
            "exec",
            "-e",
            "X=1",
            "-w",
            "/www",
            "-u",
            "nobody",
            "web",
            "sh",
            "-c",
            "echo $X $(pwd) $(id -u)"
        ])
        .trim(),
        "1 /www 65534"
    );
    // A file written by exec is seen by the server.
    e.ok(&["exec", "web", "sh", "-c", "echo new > /www/new.html"]);
    assert!(http_get(port, "/new.html").contains("new"));
    let o = e.run(&["exec", "web", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));

    // The host port is released when the container stops.
    e.ok(&["stop", "-t", "1", "web"]);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn networks_private_host_and_none() {
    let Some(e) = Env::new() else { return };
    let private = e.ok(&["run", "--rm", "busybox:local", "ls", "/sys/class/net"]);
    assert_eq!(private.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    let none = e.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox:local",
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(none.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    // host: the host's interfaces, and a server on the host's loopback is reachable.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        c.write_all(b"hello from the host\n").unwrap();
    });
    let port_s = port.to_string();
    let out = e.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox:local",
        "nc",
        "127.0.0.1",
        &port_s,
    ]);
    assert_eq!(out, "hello from the host\n");
    server.join().unwrap();
    // The private network cannot reach the host's loopback.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let o = e.run(&[
        "run",
        "--rm",
        "busybox:local",
        "nc",
        "-w",
        "1",
        "127.0.0.1",
        &port,
    ]);
    assert_ne!(o.status.code(), Some(0));
    drop(listener);
}

#[test]
fn pasta_gives_a_private_network_outbound_access() {
    let Some(e) = Env::new() else { return };
    if super::util::require::tool("pasta", "apt-get install passt").is_none() {
        return;
    }
    // pasta maps the container's gateway address to the host's loopback: a server on
    // 127.0.0.1 is reachable there, through the container's own eth0.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        c.write_all(b"hello through pasta\n").unwrap();
    });
    let script = format!(
        "ip -4 addr show eth0 | grep -q 'inet ' || echo no-eth0; \
         gw=$(ip route | awk '/default/ {{print $3}}'); sleep 2 | timeout 10 nc $gw {port}"
    );
    // stdin stays open until the server's reply and end have come through (pasta can lose
    // the server's FIN after the client half-closed), and --init keeps `timeout` able to
    // stop nc, which as PID 1 would ignore SIGTERM.
    let out = e.ok(&[
        "run",
        "--rm",
        "--init",
        "--network",
        "pasta",
        "busybox:local",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(out, "hello through pasta\n");
    server.join().unwrap();
    // Nothing of pasta is left: no bind mount of the namespace, no process.
    assert_eq!(
        mounts_mentioning(&e.root().display().to_string()),
        Vec::<String>::new()
    );
}

#[test]
fn publish_all_port_ranges_udp_and_the_port_command() {
    let Some(e) = Env::new() else { return };
    e.build(
        "multi:1",
        "FROM busybox:local\nRUN mkdir /www && echo multi > /www/index.html\n\
         EXPOSE 8080 9000 5353/udp\n",
        &[],
    );
    // -P publishes every exposed port (tcp and udp); a range gives one binding per port.
    e.ok(&[
        "run",
        "-d",
        "-P",
        "-p",
        "127.0.0.1::7000-7001",
        "--name",
        "multi",
        "multi:1",
        "sh",
        "-c",
        "httpd -p 8080 -h /www; httpd -p 7001 -h /www; exec httpd -f -p 9000 -h /www",
    ]);
    let v = e.wait_for("multi", 10, running);
    let listing = e.ok(&["port", "multi"]);
    let lines: Vec<&str> = listing.lines().collect();
    // A port published on no address listens on [::] too when the host has IPv6, as Docker's.
    let ipv6 = std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|s| !s.trim().is_empty());
    let mut want = vec![
        "5353/udp -> 0.0.0.0:",
        "5353/udp -> [::]:",
        "7000/tcp -> 127.0.0.1:",
        "7001/tcp -> 127.0.0.1:",
        "8080/tcp -> 0.0.0.0:",
        "8080/tcp -> [::]:",
        "9000/tcp -> 0.0.0.0:",
        "9000/tcp -> [::]:",
    ];
    if !ipv6 {
        want.retain(|w| !w.contains("[::]"));
    }
    assert_eq!(lines.len(), want.len(), "{listing}");
    for (line, want) in lines.iter().zip(&want) {
        assert!(line.starts_with(want), "{listing}");
    }
    let p8080 = host_port(&v, "8080/tcp");
    let mut both = format!("0.0.0.0:{p8080}\n");
    if ipv6 {
        both.push_str(&format!("[::]:{p8080}\n"));
    }
    assert_eq!(e.ok(&["port", "multi", "8080"]), both);
    assert!(http_get(p8080, "/").contains("multi"));
    assert!(http_get(host_port(&v, "9000/tcp"), "/").contains("multi"));
    assert!(http_get(host_port(&v, "7001/tcp"), "/").contains("multi"));
    let udp = host_port(&v, "5353/udp");
    assert_ne!(udp, 0);
    let o = e.run(&["port", "multi", "1234/udp"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("No public port '1234/udp' published for multi"),
        "{}",
        stderr(&o)
    );
    // A stopped container has no ports bound.
    e.ok(&["stop", "-t", "1", "multi"]);
    assert_eq!(e.ok(&["port", "multi"]), "");
}
