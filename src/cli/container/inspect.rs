//! `kiln container inspect`: Docker's inspect document for a container, built from what the
//! container's config and state record (the document's shape is in [`doc`]).

mod doc;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Value};

use kiln::container::{volumes, Container, Containers, MountPoint, Network, PortBinding, Status};
use kiln::executor::plan::{MASKED_PATHS, READONLY_PATHS};
use kiln::image::config::chain_id;
use kiln::image::Digest;
use kiln::imageops::inspect::{GraphDriver, GraphDriverData, DRIVER, ZERO_TIME};
use kiln::store::Store;

pub use doc::ContainerDoc;
use doc::{
    ConfigDoc, EndpointDoc, HostConfigDoc, LogConfigDoc, MountDoc, NetworkSettingsDoc, PortDoc,
    RestartPolicyDoc, StateDoc,
};

use super::ps::state_name;
use crate::cli::inspect::print_docs;

/// `kiln container inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Display total file sizes
    #[arg(short = 's', long)]
    pub size: bool,
    /// Containers
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// The size of `/dev/shm` the executor mounts (`size=65536k`), Docker's default.
const SHM_SIZE: i64 = 64 << 20;

/// Docker's `docker container inspect` document for `c`; `store` (when it opens) gives the
/// image's unpacked layers, and with `size` the container's sizes are counted.
pub fn inspect_doc(c: &Container, store: Option<&Store>, size: bool) -> ContainerDoc {
    let (cfg, st) = (&c.config, &c.state);
    let (path, args) = match cfg.argv.split_first() {
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => (String::new(), Vec::new()),
    };
    let step = running_step_dir(c);
    let in_step = |name: &str| {
        step.as_ref()
            .map(|s| s.join(name).display().to_string())
            .unwrap_or_default()
    };
    let layers = store.map(|s| layer_dirs(s, c)).unwrap_or_default();
    let (size_rw, size_root_fs) = if size {
        let own = volumes::du(&c.dir.join("upper"));
        let image: u64 = store.map(|s| image_bytes(s, c)).unwrap_or_default();
        (Some(own), Some(own + image))
    } else {
        (None, None)
    };
    ContainerDoc {
        id: cfg.id.clone(),
        created: cfg.created.clone(),
        path,
        args,
        state: state_doc(c),
        image: cfg.image_id.clone(),
        resolv_conf_path: in_step("resolv.conf"),
        hostname_path: in_step("hostname"),
        hosts_path: in_step("hosts"),
        log_path: c.dir.join("log.json").display().to_string(),
        name: format!("/{}", cfg.name),
        restart_count: st.restart_count,
        driver: DRIVER.to_owned(),
        platform: "linux".to_owned(),
        mount_label: String::new(),
        process_label: String::new(),
        app_armor_profile: String::new(),
        exec_ids: None,
        host_config: host_config_doc(c),
        graph_driver: graph_driver(c, step.as_deref(), layers),
        size_rw,
        size_root_fs,
        mounts: cfg.mounts.iter().map(mount_doc).collect(),
        config: config_doc(c),
        network_settings: network_settings_doc(c),
    }
}

/// The scratch directory of the container's current run (`run/step-…`, holding the
/// generated `/etc` files and the merged root), while it runs.
fn running_step_dir(c: &Container) -> Option<PathBuf> {
    if !c.is_running() {
        return None;
    }
    let rd = std::fs::read_dir(c.dir.join("run")).ok()?;
    rd.filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("step-"))
        .filter(|e| e.path().join("resolv.conf").exists())
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

/// The snapshot directory of each of the container's image layers, bottom first: where
/// its files are unpacked, or will be when the container first starts.
fn layer_dirs(store: &Store, c: &Container) -> Vec<String> {
    let mut parent: Option<Digest> = None;
    let mut out = Vec::new();
    for d in c.diff_ids().unwrap_or_default() {
        let chain = chain_id(parent.as_ref(), &d);
        out.push(store.snapshot_path(&chain).display().to_string());
        parent = Some(chain);
    }
    out
}

/// Bytes of the image's layers, counted as `ps -s` counts them.
fn image_bytes(store: &Store, c: &Container) -> u64 {
    c.diff_ids()
        .unwrap_or_default()
        .iter()
        .filter_map(|d| store.blob_size(d).ok())
        .sum()
}

/// `GraphDriver`: the image's snapshots (and, while it runs, the generated `/etc` layer)
/// below the container's own upper dir.
fn graph_driver(c: &Container, step: Option<&Path>, layers: Vec<String>) -> GraphDriver {
    let mut lower: Vec<String> = step
        .map(|s| s.join("init").display().to_string())
        .into_iter()
        .collect();
    lower.extend(layers.into_iter().rev());
    GraphDriver {
        data: GraphDriverData {
            lower_dir: (!lower.is_empty()).then(|| lower.join(":")),
            merged_dir: step
                .map(|s| s.join("merged").display().to_string())
                .unwrap_or_default(),
            upper_dir: c.dir.join("upper").display().to_string(),
            work_dir: c.dir.join("work").display().to_string(),
        },
        name: DRIVER.to_owned(),
    }
}

/// `State`: status, process and exit.
fn state_doc(c: &Container) -> StateDoc {
    let st = &c.state;
    let time = |t: &str| {
        if t.is_empty() {
            ZERO_TIME.to_owned()
        } else {
            t.to_owned()
        }
    };
    StateDoc {
        status: state_name(c).to_owned(),
        running: st.status == Status::Running,
        paused: c.paused,
        restarting: st.status == Status::Restarting,
        oom_killed: st.oom_killed,
        dead: st.status == Status::Dead,
        pid: if st.status == Status::Running {
            st.pid
        } else {
            0
        },
        exit_code: st.exit_code,
        error: st.error.clone(),
        started_at: time(&st.started_at),
        finished_at: time(&st.finished_at),
        health: health_doc(c),
    }
}

/// `State.Health`, as Docker shows it: only for a container with a health check that has
/// started; `starting` until the first check ends, and `unhealthy` once the container stops.
fn health_doc(c: &Container) -> Option<Value> {
    c.config.healthcheck.as_ref()?;
    if c.state.started_at.is_empty() {
        return None;
    }
    let mut h = match &c.health {
        Some(h) => json!(h),
        None => json!({"Status": "starting", "FailingStreak": 0, "Log": []}),
    };
    if c.state.status != Status::Running {
        h["Status"] = json!("unhealthy");
    }
    Some(h)
}

/// The name Docker gives the container's network: kiln's own network stands where Docker's
/// default `bridge` does.
fn network_name(n: Network) -> &'static str {
    match n {
        Network::Private => "bridge",
        other => other.name(),
    }
}

/// `-v` as Docker lists it in `Binds`: `SOURCE:DEST[:ro]`, a volume by its name.
fn bind_spec(m: &MountPoint) -> Option<String> {
    let source = match m.kind.as_str() {
        "bind" => m.source.display().to_string(),
        "volume" if !is_anonymous(&m.name) => m.name.clone(),
        _ => return None,
    };
    let ro = if m.rw { "" } else { ":ro" };
    Some(format!("{source}:{}{ro}", m.destination))
}

/// Anonymous volumes (`-v /path`, an image's `VOLUME`) have a 64-hex-digit name.
fn is_anonymous(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `HostConfig`: binds, network, published ports, restart policy and resources.
fn host_config_doc(c: &Container) -> HostConfigDoc {
    let cfg = &c.config;
    let r = &cfg.resources;
    let binds: Vec<String> = cfg.mounts.iter().filter_map(bind_spec).collect();
    let non_empty = |v: Vec<String>| (!v.is_empty()).then_some(v);
    let abs = |p: &&str| format!("/{p}");
    HostConfigDoc {
        binds: non_empty(binds),
        log_config: LogConfigDoc {
            kind: "json-file".to_owned(),
            config: BTreeMap::new(),
        },
        network_mode: network_name(cfg.network).to_owned(),
        port_bindings: port_bindings(&cfg.ports),
        restart_policy: RestartPolicyDoc {
            name: cfg.restart.name.clone(),
            maximum_retry_count: cfg.restart.max_retries,
        },
        auto_remove: cfg.auto_remove,
        cgroupns_mode: "host".to_owned(),
        extra_hosts: non_empty(
            cfg.extra_hosts
                .iter()
                .map(|(n, a)| format!("{n}:{a}"))
                .collect(),
        ),
        ipc_mode: "private".to_owned(),
        publish_all_ports: cfg.publish_all,
        readonly_rootfs: cfg.read_only,
        tmpfs: (!cfg.tmpfs.is_empty()).then(|| cfg.tmpfs.iter().cloned().collect()),
        shm_size: SHM_SIZE,
        runtime: "kiln".to_owned(),
        cpu_shares: r.cpu_shares,
        memory: r.memory,
        nano_cpus: r.nano_cpus,
        cpuset_cpus: r.cpuset_cpus.clone(),
        memory_swap: r.memory_swap,
        pids_limit: (r.pids_limit > 0).then_some(r.pids_limit),
        masked_paths: MASKED_PATHS.iter().map(abs).collect(),
        readonly_paths: READONLY_PATHS.iter().map(abs).collect(),
        init: cfg.init.then_some(true),
        ..HostConfigDoc::default()
    }
}

/// `HostConfig.PortBindings`: the ports asked for. An address not given shows as `""`, as
/// Docker shows it (kiln records it as `0.0.0.0`); a port the kernel picks as `""`.
fn port_bindings(ports: &[PortBinding]) -> BTreeMap<String, Vec<PortDoc>> {
    let mut out: BTreeMap<String, Vec<PortDoc>> = BTreeMap::new();
    for p in ports {
        let host_ip = if p.host_ip == "0.0.0.0" {
            String::new()
        } else {
            p.host_ip.clone()
        };
        let host_port = if p.host_port == 0 {
            String::new()
        } else {
            p.host_port.to_string()
        };
        out.entry(format!("{}/{}", p.container_port, p.proto))
            .or_default()
            .push(PortDoc { host_ip, host_port });
    }
    out
}

/// `NetworkSettings.Ports`: while it runs, each exposed port with its host bindings (`null`
/// for one not published); empty when it does not run, as Docker shows it.
fn network_ports(c: &Container) -> BTreeMap<String, Option<Vec<PortDoc>>> {
    let (cfg, st) = (&c.config, &c.state);
    let mut ports = BTreeMap::new();
    if !c.is_running() {
        return ports;
    }
    for e in &cfg.exposed_ports {
        ports.insert(e.clone(), None);
    }
    let bound = if st.ports.is_empty() {
        &cfg.ports
    } else {
        &st.ports
    };
    for p in bound {
        let key = format!("{}/{}", p.container_port, p.proto);
        ports
            .entry(key)
            .or_insert(None)
            .get_or_insert_with(Vec::new)
            .push(PortDoc {
                host_ip: p.host_ip.clone(),
                host_port: p.host_port.to_string(),
            });
    }
    ports
}

/// `NetworkSettings`: the ports, and one entry in `Networks` for the container's network.
/// kiln's networks give a container no address of its own beyond loopback (`--network
/// pasta` shares the host's), so the address fields are empty.
fn network_settings_doc(c: &Container) -> NetworkSettingsDoc {
    let cfg = &c.config;
    let sandbox_key = if c.is_running() && cfg.network != Network::Host {
        format!("/proc/{}/ns/net", c.state.pid)
    } else {
        String::new()
    };
    let mut networks = BTreeMap::new();
    networks.insert(network_name(cfg.network).to_owned(), EndpointDoc::default());
    NetworkSettingsDoc {
        ports: network_ports(c),
        sandbox_key,
        networks,
        ..NetworkSettingsDoc::default()
    }
}

/// One entry of `Mounts`: a bind, or a volume with its name and driver.
fn mount_doc(m: &MountPoint) -> MountDoc {
    let volume = m.kind == "volume";
    MountDoc {
        kind: m.kind.clone(),
        name: (volume && !m.name.is_empty()).then(|| m.name.clone()),
        source: m.source.display().to_string(),
        destination: m.destination.clone(),
        driver: volume.then(|| "local".to_owned()),
        mode: if m.rw { "" } else { "ro" }.to_owned(),
        rw: m.rw,
        propagation: if volume { "" } else { "rprivate" }.to_owned(),
    }
}

/// `Config`: what the container was created with.
fn config_doc(c: &Container) -> ConfigDoc {
    let cfg = &c.config;
    let exposed: BTreeMap<String, Value> = cfg
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
    let volumes: BTreeMap<String, Value> = cfg
        .mounts
        .iter()
        .filter(|m| m.kind == "volume" && is_anonymous(&m.name))
        .map(|m| (m.destination.clone(), json!({})))
        .collect();
    ConfigDoc {
        hostname: cfg.hostname.clone(),
        domainname: String::new(),
        user: cfg.user.clone(),
        attach_stdin: cfg.open_stdin && cfg.stdin_once,
        attach_stdout: cfg.stdin_once,
        attach_stderr: cfg.stdin_once,
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        tty: cfg.tty,
        open_stdin: cfg.open_stdin,
        stdin_once: cfg.stdin_once,
        env: (!cfg.env.is_empty()).then(|| cfg.env.clone()),
        cmd: cfg.cmd.clone(),
        healthcheck: cfg.healthcheck.as_ref().map(|h| json!(h)),
        image: cfg.image.clone(),
        volumes: (!volumes.is_empty()).then_some(volumes),
        working_dir: cfg.working_dir.clone(),
        entrypoint: cfg.entrypoint.clone(),
        on_build: None,
        labels: cfg.labels.clone(),
        // Docker shows a stop signal only when the image or `--stop-signal` set one; kiln
        // records the default too.
        stop_signal: (cfg.stop_signal != "SIGTERM").then(|| cfg.stop_signal.clone()),
        stop_timeout: cfg.stop_timeout,
    }
}

/// The store the containers under `containers` use, if it opens.
pub fn store_of(containers: &Containers) -> Option<Store> {
    Store::open(containers.dir().parent().unwrap_or(containers.dir())).ok()
}

pub(super) fn inspect_cmd(containers: &Containers, a: &InspectArgs) -> i32 {
    let store = store_of(containers);
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for name in &a.containers {
        match containers.find(name) {
            Ok(c) => docs.push(inspect_doc(&c, store.as_ref(), a.size)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    print_docs(&docs, a.format.as_deref(), &errors)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn binds_and_port_bindings_as_docker_lists_them() {
        let m = |kind: &str, name: &str, source: &str, rw: bool| MountPoint {
            kind: kind.into(),
            name: name.into(),
            source: PathBuf::from(source),
            destination: "/d".into(),
            rw,
        };
        let anon = "a".repeat(64);
        for (mount, want) in [
            (m("bind", "", "/h", true), Some("/h:/d")),
            (m("bind", "", "/h", false), Some("/h:/d:ro")),
            (m("volume", "data", "/v/data/_data", true), Some("data:/d")),
            (m("volume", &anon, "/v/x/_data", true), None),
        ] {
            assert_eq!(bind_spec(&mount).as_deref(), want, "{mount:?}");
        }
        let ports = PortBinding::parse_all("8080:80").unwrap();
        let mut more = PortBinding::parse_all("127.0.0.1::53/udp").unwrap();
        more.extend(ports);
        let b = port_bindings(&more);
        assert_eq!(b["80/tcp"][0].host_ip, "");
        assert_eq!(b["80/tcp"][0].host_port, "8080");
        assert_eq!(b["53/udp"][0].host_ip, "127.0.0.1");
        assert_eq!(b["53/udp"][0].host_port, "");
    }
}
