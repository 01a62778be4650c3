//! `kiln ps`: Docker's columns, filters and templates over the container list.

use clap::Args;
use serde_json::{json, Value};

use kiln::common::time::Timestamp;
use kiln::container::{Container, Containers, PortBinding, Status};

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
    let bound = if c.is_running() && !c.state.ports.is_empty() {
        &c.state.ports
    } else {
        &c.config.ports
    };
    let mut parts: Vec<String> = if c.is_running() {
        bound.iter().map(PortBinding::display).collect()
    } else {
        Vec::new()
    };
    for e in &c.config.exposed_ports {
        let published = bound
            .iter()
            .any(|p| format!("{}/{}", p.container_port, p.proto) == *e);
        if !published && c.is_running() {
            parts.push(e.clone());
        }
    }
    parts.join(", ")
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

    #[test]
    fn commands_truncate_like_docker() {
        assert_eq!(truncate("sleep 30", 20), "sleep 30");
        assert_eq!(
            truncate("sh -c 'while true; do sleep 1; done'", 20),
            "sh -c 'while true; …"
        );
    }
}
