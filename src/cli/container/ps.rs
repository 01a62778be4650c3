//! `kiln ps`: Docker's columns, filters and templates over the container list.

use clap::Args;
use serde_json::{json, Value};

use kiln::common::time::Timestamp;
use kiln::container::{Container, Containers, Status};

use crate::cli::fail;
use crate::cli::format::{print_rows, Report, Row};
use crate::cli::units::{human_duration, human_size};

/// `kiln ps`.
#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only display container IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Filter output based on conditions provided (id, name, status, label, ancestor, exited)
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    /// Show the latest created container
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Show n last created containers
    #[arg(short = 'n', long = "last")]
    pub last: Option<usize>,
    /// Display total file sizes
    #[arg(short = 's', long)]
    pub size: bool,
}

fn quote_command(argv: &[String]) -> String {
    argv.join(" ")
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn ago(t: &str, now: Timestamp) -> String {
    match Timestamp::parse_rfc3339(t) {
        Ok(t) => human_duration(t.seconds_until(now)),
        Err(_) => "Less than a second".into(),
    }
}

/// Docker's name of the state: the recorded status, or `paused`.
pub(super) fn state_name(c: &Container) -> &'static str {
    if c.paused {
        "paused"
    } else {
        c.state.status.as_str()
    }
}

/// Docker's STATUS column.
pub(super) fn status_text(c: &Container, now: Timestamp) -> String {
    match c.state.status {
        Status::Created => "Created".into(),
        Status::Running if c.paused => {
            format!("Up {} (Paused)", ago(&c.state.started_at, now))
        }
        Status::Running => {
            let health = match c.health.as_ref().map(|h| h.status.as_str()) {
                Some("starting") => " (health: starting)",
                Some("healthy") => " (healthy)",
                Some("unhealthy") => " (unhealthy)",
                _ => "",
            };
            format!("Up {}{health}", ago(&c.state.started_at, now))
        }
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            c.state.exit_code,
            ago(&c.state.finished_at, now)
        ),
        Status::Exited => {
            if c.state.finished_at.is_empty() {
                format!("Exited ({})", c.state.exit_code)
            } else {
                format!(
                    "Exited ({}) {} ago",
                    c.state.exit_code,
                    ago(&c.state.finished_at, now)
                )
            }
        }
        Status::Dead => "Dead".into(),
    }
}

fn ports_text(c: &Container) -> String {
    if !c.is_running() {
        return String::new();
    }
    let bound = if c.state.ports.is_empty() {
        &c.config.ports
    } else {
        &c.state.ports
    };
    let mut ports: Vec<ShownPort> = bound
        .iter()
        .map(|p| ShownPort {
            private: p.container_port,
            ip: Some(if p.host_ip.is_empty() {
                "0.0.0.0".to_string()
            } else {
                p.host_ip.clone()
            }),
            public: p.host_port,
            proto: p.proto.clone(),
        })
        .collect();
    for e in &c.config.exposed_ports {
        let (port, proto) = e.split_once('/').unwrap_or((e.as_str(), "tcp"));
        let Ok(private) = port.parse::<u16>() else {
            continue;
        };
        if !bound
            .iter()
            .any(|p| p.container_port == private && p.proto == proto)
        {
            ports.push(ShownPort {
                private,
                ip: None,
                public: 0,
                proto: proto.to_string(),
            });
        }
    }
    displayable_ports(ports)
}

/// A port as the PORTS column sees it: published (`ip` is the host address) or only exposed.
#[derive(Debug, Clone)]
struct ShownPort {
    private: u16,
    ip: Option<String>,
    public: u16,
    proto: String,
}

/// `ip:port` as Go's `net.JoinHostPort` writes it: IPv6 in brackets.
fn join_host_port(ip: &str, port: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// Docker's PORTS column. Sorted by container port, then address, host port and protocol.
/// A port published on its own number, or only exposed, joins a run of consecutive ports
/// per address and protocol (`0.0.0.0:8000-8001->8000-8001/tcp`, `7000-7001/tcp`): a run
/// that breaks is shown then, the runs still open at the end after them, in the order their
/// address and protocol first came. Ports published on another number come last
/// (`0.0.0.0:8080->80/tcp, [::]:8080->80/tcp`).
fn displayable_ports(mut ports: Vec<ShownPort>) -> String {
    ports.sort_by(|a, b| {
        (a.private, a.ip.as_deref().unwrap_or(""), a.public, &a.proto).cmp(&(
            b.private,
            b.ip.as_deref().unwrap_or(""),
            b.public,
            &b.proto,
        ))
    });
    type Key = (Option<String>, String);
    let show = |(ip, proto): &Key, first: u16, last: u16| {
        let range = if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        };
        match ip {
            Some(ip) => format!("{}->{range}/{proto}", join_host_port(ip, &range)),
            None => format!("{range}/{proto}"),
        }
    };
    let mut shown = Vec::new();
    let mut mappings = Vec::new();
    let mut runs: Vec<(Key, u16, u16)> = Vec::new();
    for p in ports {
        if let Some(ip) = &p.ip {
            if p.public != p.private {
                let host = join_host_port(ip, &p.public.to_string());
                mappings.push(format!("{host}->{}/{}", p.private, p.proto));
                continue;
            }
        }
        let key = (p.ip, p.proto);
        match runs.iter_mut().find(|r| r.0 == key) {
            None => runs.push((key, p.private, p.private)),
            Some(run) if run.2.checked_add(1) == Some(p.private) => run.2 = p.private,
            Some(run) => {
                shown.push(show(&run.0, run.1, run.2));
                (run.1, run.2) = (p.private, p.private);
            }
        }
    }
    shown.extend(runs.iter().map(|(k, first, last)| show(k, *first, *last)));
    shown.extend(mappings);
    shown.join(", ")
}

fn ps_row(c: &Container, no_trunc: bool, now: Timestamp) -> Value {
    let cmd = quote_command(&c.config.argv);
    let labels: Vec<String> = c
        .config
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    json!({
        "ID": if no_trunc { c.config.id.clone() } else { c.short_id().to_string() },
        "Image": c.config.image,
        "Command": if no_trunc { format!("\"{cmd}\"") } else { format!("\"{}\"", truncate(&cmd, 20)) },
        "CreatedAt": Timestamp::parse_rfc3339(&c.config.created).map(|t| t.to_go_string()).unwrap_or_else(|_| c.config.created.clone()),
        "RunningFor": format!("{} ago", ago(&c.config.created, now)),
        "Ports": ports_text(c),
        "State": state_name(c),
        "Status": status_text(c, now),
        "Names": c.config.name,
        "Labels": labels.join(","),
        "Mounts": c.config.mounts.iter().map(|m| if m.name.is_empty() { m.source.display().to_string() } else { m.name.clone() }).collect::<Vec<_>>().join(","),
        "Networks": c.config.network.name(),
        "LocalVolumes": c.config.mounts.iter().filter(|m| !m.name.is_empty()).count().to_string(),
        "Platform": null,
        "Size": "N/A",
    })
}

fn ps_title(f: &str) -> String {
    match f {
        "ID" => "CONTAINER ID",
        "RunningFor" => "CREATED",
        "CreatedAt" => "CREATED AT",
        other => return other.to_uppercase(),
    }
    .to_string()
}

/// One `--filter` of `ps`.
fn ps_filter(c: &Container, f: &str) -> Result<bool, String> {
    let (k, v) = f
        .split_once('=')
        .ok_or_else(|| format!("bad format of filter (expected name=value): {f}"))?;
    Ok(match k {
        "id" => c.config.id.starts_with(v),
        "name" => c.config.name.contains(v.trim_start_matches('/')),
        "status" => {
            if ![
                "created",
                "restarting",
                "running",
                "removing",
                "paused",
                "exited",
                "dead",
            ]
            .contains(&v)
            {
                return Err(format!("invalid filter 'status={v}'"));
            }
            state_name(c) == v
        }
        "label" => match v.split_once('=') {
            Some((lk, lv)) => c.config.labels.get(lk).is_some_and(|x| x == lv),
            None => c.config.labels.contains_key(v),
        },
        "ancestor" => {
            c.config.image == v
                || c.config.image_id == v
                || c.config
                    .image_id
                    .trim_start_matches("sha256:")
                    .starts_with(v)
        }
        "exited" => {
            c.state.status == Status::Exited
                && v.parse::<i32>()
                    .map_err(|_| format!("invalid filter 'exited={v}'"))?
                    == c.state.exit_code
        }
        "network" => c.config.network.name() == v,
        "health" => {
            if !["starting", "healthy", "unhealthy", "none"].contains(&v) {
                return Err(format!("invalid filter 'health={v}'"));
            }
            let status = match (&c.health, c.state.status) {
                (Some(h), Status::Running) => h.status.as_str(),
                _ => "none",
            };
            status == v
        }
        _ => return Err(format!("invalid filter '{k}'")),
    })
}

pub(super) fn ps_cmd(containers: &Containers, a: &PsArgs) -> i32 {
    let mut list = match containers.list() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let all = a.all
        || a.latest
        || a.last.is_some()
        || a.filter
            .iter()
            .any(|f| f.starts_with("status=") || f.starts_with("exited="));
    if !all {
        list.retain(|c| c.is_running());
    }
    let mut kept = Vec::new();
    for c in list {
        let mut ok = true;
        for f in &a.filter {
            match ps_filter(&c, f) {
                Ok(true) => {}
                Ok(false) => ok = false,
                Err(e) => return fail(e),
            }
        }
        if ok {
            kept.push(c);
        }
    }
    if a.latest {
        kept.truncate(1);
    } else if let Some(n) = a.last {
        kept.truncate(n);
    }
    let now = Timestamp::now();
    let store = if a.size || a.format.as_deref().is_some_and(|f| f.contains(".Size")) {
        kiln::store::Store::open(containers.dir().parent().unwrap_or(containers.dir())).ok()
    } else {
        None
    };
    let rows: Vec<Row> = kept
        .iter()
        .map(|c| {
            let mut row = ps_row(c, a.no_trunc, now);
            if let Some(store) = &store {
                // Docker's SIZE: what the container wrote, and with its image's layers.
                let own = kiln::container::volumes::du(&c.dir.join("upper"));
                let image: u64 = c
                    .diff_ids()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|d| store.blob_size(d).ok())
                    .sum();
                row["Size"] = json!(format!(
                    "{} (virtual {})",
                    human_size(own),
                    human_size(own + image)
                ));
            }
            // `.Label "k"` reads the labels themselves: `.Labels` is Docker's joined string.
            let labels = c
                .config
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Row {
                data: row,
                labels: Some(labels),
            }
        })
        .collect();
    const TABLE: &str = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";
    let template = match a.format.as_deref() {
        None | Some("" | "table") if a.quiet => "{{.ID}}".to_string(),
        None | Some("" | "table") if a.size => format!("{TABLE}\t{{{{.Size}}}}"),
        None | Some("" | "table") => TABLE.to_string(),
        Some("json") => "{{json .}}".to_string(),
        Some(f) => f.to_string(),
    };
    print_rows(&template, &rows, &ps_title, Report::Ps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(private: u16, ip: Option<&str>, public: u16, proto: &str) -> ShownPort {
        ShownPort {
            private,
            ip: ip.map(str::to_string),
            public,
            proto: proto.to_string(),
        }
    }

    /// The PORTS columns `docker ps` printed for these containers (Docker 28's CLI).
    #[test]
    fn ports_column_as_docker() {
        let v4 = Some("0.0.0.0");
        let v6 = Some("::");
        // -p 18081:80 -p 127.0.0.1:18082:81 -p 18083 (the kernel chose 32768)
        let ports = vec![
            port(18083, v6, 32768, "tcp"),
            port(80, v4, 18081, "tcp"),
            port(81, Some("127.0.0.1"), 18082, "tcp"),
            port(80, v6, 18081, "tcp"),
            port(18083, v4, 32768, "tcp"),
        ];
        assert_eq!(
            displayable_ports(ports),
            "0.0.0.0:18081->80/tcp, [::]:18081->80/tcp, 127.0.0.1:18082->81/tcp, \
             0.0.0.0:32768->18083/tcp, [::]:32768->18083/tcp"
        );
        // -p 18090:18090 -p 18091:18091 -p 127.0.0.1:18093:18093, exposed 7000, 7001, 7003/udp
        let ports = vec![
            port(18090, v4, 18090, "tcp"),
            port(18090, v6, 18090, "tcp"),
            port(18091, v4, 18091, "tcp"),
            port(18091, v6, 18091, "tcp"),
            port(18093, Some("127.0.0.1"), 18093, "tcp"),
            port(7000, None, 0, "tcp"),
            port(7001, None, 0, "tcp"),
            port(7003, None, 0, "udp"),
        ];
        assert_eq!(
            displayable_ports(ports),
            "7000-7001/tcp, 7003/udp, 0.0.0.0:18090-18091->18090-18091/tcp, \
             [::]:18090-18091->18090-18091/tcp, 127.0.0.1:18093->18093/tcp"
        );
        // A run that breaks is shown before the runs still open.
        let ports = vec![
            port(7000, None, 0, "tcp"),
            port(7000, None, 0, "udp"),
            port(7005, None, 0, "tcp"),
        ];
        assert_eq!(displayable_ports(ports), "7000/tcp, 7005/tcp, 7000/udp");
    }

    #[test]
    fn commands_truncate_like_docker() {
        assert_eq!(truncate("sleep 30", 20), "sleep 30");
        assert_eq!(
            truncate("sh -c 'while true; do sleep 1; done'", 20),
            "sh -c 'while true; …"
        );
    }
}
