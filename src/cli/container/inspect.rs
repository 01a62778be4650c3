//! `kiln container inspect`: Docker's inspect document for a container.

use clap::Args;
use serde_json::{json, Value};

use kiln::container::{Container, Containers, Network, Status};

use super::ps::state_name;
use crate::cli::image::render;
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
    let mut ports = serde_json::Map::new();
    for e in &cfg.exposed_ports {
        ports.insert(e.clone(), Value::Null);
    }
    let bound = if c.is_running() && !st.ports.is_empty() {
        &st.ports
    } else {
        &cfg.ports
    };
    let mut bindings = serde_json::Map::new();
    for p in &cfg.ports {
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
    if c.is_running() {
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
    }
    let exposed: serde_json::Map<String, Value> = cfg
        .exposed_ports
        .iter()
        .chain(
            cfg.ports
                .iter()
                .map(|p| format!("{}/{}", p.container_port, p.proto))
                .collect::<Vec<_>>()
                .iter(),
        )
        .map(|k| (k.clone(), json!({})))
        .collect();
    let mounts: Vec<Value> = cfg
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
        .collect();
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
    let (path, args) = match cfg.argv.split_first() {
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => (String::new(), Vec::new()),
    };
    let zero = "0001-01-01T00:00:00Z";
    json!({
        "Id": cfg.id,
        "Created": cfg.created,
        "Path": path,
        "Args": args,
        "State": {
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
        },
        "Image": cfg.image_id,
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": c.dir.join("log.json"),
        "Name": format!("/{}", cfg.name),
        "RestartCount": st.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": {
            "Binds": if binds.is_empty() { Value::Null } else { json!(binds) },
            "NetworkMode": cfg.network.name(),
            "PortBindings": bindings,
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
        },
        "GraphDriver": {
            "Name": "overlay",
            "Data": {"UpperDir": c.dir.join("upper"), "WorkDir": c.dir.join("work")},
        },
        "Mounts": mounts,
        "Config": {
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
        },
        "Init": cfg.init,
        "NetworkSettings": {
            "Ports": ports,
            "SandboxKey": if c.is_running() && cfg.network != Network::Host { format!("/proc/{}/ns/net", st.pid) } else { String::new() },
        },
    })
}

pub(super) fn inspect_cmd(containers: &Containers, a: &InspectArgs) -> i32 {
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
    let text = match &a.format {
        Some(f) => docs
            .iter()
            .map(|d| render(f, std::slice::from_ref(d), &|s: &str| s.to_uppercase()))
            .collect::<Result<String, String>>(),
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
