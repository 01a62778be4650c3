//! `kiln container inspect`: Docker's inspect document for a container.

use clap::Args;
use serde_json::{json, Value};

use kiln::container::{Container, Containers, Network, Status};

use super::ps::state_name;
use crate::cli::format::{DocFormat, Report};
use crate::cli::{fail, out};

/// `kiln container inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Containers
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// Docker's `docker container inspect` document.
pub fn inspect_doc(c: &Container) -> Value {
    let cfg = &c.config;
    let st = &c.state;
    let (path, args) = match cfg.argv.split_first() {
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => (String::new(), Vec::new()),
    };
    json!({
        "Id": cfg.id,
        "Created": cfg.created,
        "Path": path,
        "Args": args,
        "State": state_doc(c),
        "Image": cfg.image_id,
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": c.dir.join("log.json"),
        "Name": format!("/{}", cfg.name),
        "RestartCount": st.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": host_config_doc(c),
        "GraphDriver": {
            "Name": "overlay",
            "Data": {"UpperDir": c.dir.join("upper"), "WorkDir": c.dir.join("work")},
        },
        "Mounts": mounts_doc(c),
        "Config": config_doc(c),
        "Init": cfg.init,
        "NetworkSettings": {
            "Ports": network_ports(c),
            "SandboxKey": if c.is_running() && cfg.network != Network::Host { format!("/proc/{}/ns/net", st.pid) } else { String::new() },
        },
    })
}

/// `State`: status, process and exit.
fn state_doc(c: &Container) -> Value {
    let st = &c.state;
    let zero = "0001-01-01T00:00:00Z";
    json!({
        "Status": state_name(c),
        "Running": st.status == Status::Running,
        "Paused": c.paused,
        "Restarting": st.status == Status::Restarting,
        "OOMKilled": st.oom_killed,
        "Health": match (&c.health, st.status) {
            (Some(h), Status::Running) => json!(h),
            _ => Value::Null,
        },
        "Dead": st.status == Status::Dead,
        "Pid": if st.status == Status::Running { st.pid } else { 0 },
        "ExitCode": st.exit_code,
        "Error": st.error,
        "StartedAt": if st.started_at.is_empty() { zero } else { st.started_at.as_str() },
        "FinishedAt": if st.finished_at.is_empty() { zero } else { st.finished_at.as_str() },
    })
}

/// `HostConfig`: binds, network, published ports, restart policy and resources.
fn host_config_doc(c: &Container) -> Value {
    let cfg = &c.config;
    let binds: Vec<String> = cfg
        .mounts
        .iter()
        .filter(|m| m.kind == "bind")
        .map(|m| {
            format!(
                "{}:{}{}",
                m.source.display(),
                m.destination,
                if m.rw { "" } else { ":ro" }
            )
        })
        .collect();
    json!({
        "Binds": if binds.is_empty() { Value::Null } else { json!(binds) },
        "NetworkMode": cfg.network.name(),
        "PortBindings": port_bindings(c),
        "RestartPolicy": {"Name": cfg.restart.name, "MaximumRetryCount": cfg.restart.max_retries},
        "AutoRemove": cfg.auto_remove,
        "Memory": cfg.resources.memory,
        "MemorySwap": cfg.resources.memory_swap,
        "NanoCpus": cfg.resources.nano_cpus,
        "CpuShares": cfg.resources.cpu_shares,
        "CpuPeriod": 0,
        "CpuQuota": 0,
        "CpusetCpus": cfg.resources.cpuset_cpus,
        "PidsLimit": if cfg.resources.pids_limit > 0 { json!(cfg.resources.pids_limit) } else { Value::Null },
        "ReadonlyRootfs": cfg.read_only,
        "Tmpfs": if cfg.tmpfs.is_empty() { Value::Null } else { json!(cfg.tmpfs.iter().map(|(p, o)| (p.clone(), json!(o))).collect::<serde_json::Map<_, _>>()) },
        "ExtraHosts": if cfg.extra_hosts.is_empty() { Value::Null } else { json!(cfg.extra_hosts.iter().map(|(n, a)| format!("{n}:{a}")).collect::<Vec<_>>()) },
    })
}

/// `HostConfig.PortBindings`: the ports asked for (host port empty when any).
fn port_bindings(c: &Container) -> serde_json::Map<String, Value> {
    let mut bindings = serde_json::Map::new();
    for p in &c.config.ports {
        let host_port = if p.host_port == 0 {
            String::new()
        } else {
            p.host_port.to_string()
        };
        let slot = bindings
            .entry(format!("{}/{}", p.container_port, p.proto))
            .or_insert_with(|| json!([]));
        if let Some(a) = slot.as_array_mut() {
            a.push(json!({"HostIp": p.host_ip, "HostPort": host_port}));
        }
    }
    bindings
}

/// `NetworkSettings.Ports`: every exposed port, with the host ports bound while it runs.
fn network_ports(c: &Container) -> serde_json::Map<String, Value> {
    let (cfg, st) = (&c.config, &c.state);
    let mut ports = serde_json::Map::new();
    for e in &cfg.exposed_ports {
        ports.insert(e.clone(), Value::Null);
    }
    if !c.is_running() {
        return ports;
    }
    let bound = if st.ports.is_empty() {
        &cfg.ports
    } else {
        &st.ports
    };
    for p in bound {
        let key = format!("{}/{}", p.container_port, p.proto);
        let entry = ports.entry(key).or_insert(Value::Null);
        if entry.is_null() {
            *entry = json!([]);
        }
        if let Some(a) = entry.as_array_mut() {
            a.push(json!({"HostIp": p.host_ip, "HostPort": p.host_port.to_string()}));
        }
    }
    ports
}

/// `Mounts`: volumes, binds and tmpfs mounts.
fn mounts_doc(c: &Container) -> Vec<Value> {
    c.config
        .mounts
        .iter()
        .map(|m| {
            json!({
                "Type": m.kind,
                "Name": if m.name.is_empty() { Value::Null } else { json!(m.name) },
                "Source": m.source,
                "Destination": m.destination,
                "Mode": if m.rw { "" } else { "ro" },
                "RW": m.rw,
                "Propagation": if m.kind == "bind" { "rprivate" } else { "" },
            })
        })
        .collect()
}

/// `Config`: what the container was created with.
fn config_doc(c: &Container) -> Value {
    let cfg = &c.config;
    let exposed: serde_json::Map<String, Value> = cfg
        .exposed_ports
        .iter()
        .cloned()
        .chain(
            cfg.ports
                .iter()
                .map(|p| format!("{}/{}", p.container_port, p.proto)),
        )
        .map(|k| (k, json!({})))
        .collect();
    json!({
        "Hostname": cfg.hostname,
        "Domainname": "",
        "User": cfg.user,
        "AttachStdin": cfg.open_stdin && cfg.stdin_once,
        "AttachStdout": cfg.stdin_once,
        "AttachStderr": cfg.stdin_once,
        "ExposedPorts": if exposed.is_empty() { Value::Null } else { Value::Object(exposed) },
        "Tty": cfg.tty,
        "OpenStdin": cfg.open_stdin,
        "StdinOnce": cfg.stdin_once,
        "Env": cfg.env,
        "Healthcheck": cfg.healthcheck,
        "Cmd": cfg.cmd,
        "Image": cfg.image,
        "Volumes": Value::Null,
        "WorkingDir": cfg.working_dir,
        "Entrypoint": cfg.entrypoint,
        "Labels": cfg.labels,
        "StopSignal": cfg.stop_signal,
        "StopTimeout": cfg.stop_timeout,
    })
}

pub(super) fn inspect_cmd(containers: &Containers, a: &InspectArgs) -> i32 {
    let format = match DocFormat::parse_option(a.format.as_deref()) {
        Ok(f) => f,
        Err(e) => return e.report(Report::Inspect),
    };
    let mut docs = Vec::new();
    let mut code = 0;
    for name in &a.containers {
        match containers.find(name) {
            Ok(c) => docs.push(inspect_doc(&c)),
            Err(e) => {
                eprintln!("Error: {e}");
                code = 1;
            }
        }
    }
    let text = match &format {
        Some(f) => match f.print_all(&docs) {
            Ok(()) => Ok(String::new()),
            Err(e) => return e.report(Report::Inspect),
        },
        None => {
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            serde::Serialize::serialize(&docs, &mut ser)
                .map(|()| format!("{}\n", String::from_utf8_lossy(&buf)))
                .map_err(|e| e.to_string())
        }
    };
    match text {
        Ok(t) => out(&t),
        Err(e) => return fail(e),
    }
    code
}
