//! `kiln port`: the published ports of a running container.

use std::path::Path;

use clap::Args;

use kiln::container::Containers;

use super::{fail, out};

/// `kiln port` / `kiln container port`.
#[derive(Args, Debug)]
pub struct PortArgs {
    /// The container
    pub container: String,
    /// PRIVATE_PORT[/PROTO]: only this port
    pub port: Option<String>,
}

/// Runs `kiln port`: `8080/tcp -> 0.0.0.0:32768` per binding, or only the host addresses of
/// one port, as `docker port` prints them.
pub fn port_cmd(root: &Path, a: &PortArgs) -> i32 {
    let c = match Containers::new(root).find(&a.container) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // Only a running container has ports bound (and the kernel's choices recorded).
    let ports = if c.is_running() {
        c.state.ports.clone()
    } else {
        Vec::new()
    };
    let Some(want) = &a.port else {
        let mut lines: Vec<(u16, String, String)> = ports
            .iter()
            .map(|p| {
                (
                    p.container_port,
                    p.proto.clone(),
                    format!(
                        "{}/{} -> {}\n",
                        p.container_port,
                        p.proto,
                        host_addr(&p.host_ip, p.host_port)
                    ),
                )
            })
            .collect();
        lines.sort();
        out(&lines.into_iter().map(|l| l.2).collect::<String>());
        return 0;
    };
    let (port, proto) = want.split_once('/').unwrap_or((want, "tcp"));
    let found: String = ports
        .iter()
        .filter(|p| p.container_port.to_string() == port && p.proto == proto)
        .map(|p| format!("{}\n", host_addr(&p.host_ip, p.host_port)))
        .collect();
    if found.is_empty() {
        return fail(format!(
            "No public port '{port}/{proto}' published for {}",
            c.config.name
        ));
    }
    out(&found);
    0
}

fn host_addr(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}
