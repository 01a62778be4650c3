//! `kiln stats`, `kiln top`, `kiln pause` and `kiln unpause`: Docker's commands over the
//! containers' cgroups ([`kiln::container::cgroups`]).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

use kiln::common::time::{Timestamp, MONTHS};
use kiln::container::cgroups::Usage;
use kiln::container::ops;
use kiln::container::{Container, Containers, Network, Status};

use super::format::{Format, Report, Row};
use super::units::{bytes_size, human_size_precision};
use super::{fail, out};

/// `kiln stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Disable streaming stats and only pull the first result
    #[arg(long = "no-stream")]
    pub no_stream: bool,
    /// Do not truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Format output using a custom template ('table', 'json', or a Go template)
    #[arg(long)]
    pub format: Option<String>,
    /// Containers (default: all running)
    pub containers: Vec<String>,
}

/// `kiln top`.
#[derive(Args, Debug)]
pub struct TopArgs {
    /// The container
    pub container: String,
    /// Options for `ps` (as `docker top`); without them, kiln lists the processes itself
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_options: Vec<String>,
}

/// How long `stats` measures CPU use over.
const SAMPLE: Duration = Duration::from_millis(500);

/// One container as `stats` measured it.
struct Sample {
    usage: Option<Usage>,
    net: (u64, u64),
    at: Instant,
}

fn sample(c: &Container) -> Sample {
    let cg = if c.paused || c.state.status == Status::Running {
        ops::running_cgroup(c).ok()
    } else {
        None
    };
    let net = if c.state.status == Status::Running && c.config.network != Network::Host {
        net_bytes(c.state.pid)
    } else {
        (0, 0)
    };
    Sample {
        usage: cg.map(|cg| cg.usage()),
        net,
        at: Instant::now(),
    }
}

/// Bytes received and sent by the interfaces (not loopback) of `pid`'s network namespace.
fn net_bytes(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    let mut rx = 0;
    let mut tx = 0;
    for line in text.lines().skip(2) {
        let Some((iface, rest)) = line.split_once(':') else {
            continue;
        };
        if iface.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if f.len() > 8 {
            rx += f[0];
            tx += f[8];
        }
    }
    (rx, tx)
}

pub(crate) fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// One row of `stats`; `host_mem` is the limit of a container that has none.
fn stats_row(
    c: &Container,
    key: &str,
    no_trunc: bool,
    a: &Sample,
    b: &Sample,
    host_mem: u64,
) -> Value {
    let id = if no_trunc {
        c.config.id.clone()
    } else {
        c.short_id().to_string()
    };
    let (cpu, mem, limit, pids, blk) = match (&a.usage, &b.usage) {
        (Some(u1), Some(u2)) => {
            let wall = b.at.duration_since(a.at).as_nanos().max(1) as f64;
            let cpu = u2.cpu_ns.saturating_sub(u1.cpu_ns) as f64 / wall * 100.0;
            let limit = u2.memory_limit.unwrap_or(host_mem);
            (
                cpu,
                u2.memory,
                limit,
                u2.pids,
                (u2.block_read, u2.block_write),
            )
        }
        _ => (0.0, 0, 0, 0, (0, 0)),
    };
    let mem_perc = if limit > 0 {
        mem as f64 / limit as f64 * 100.0
    } else {
        0.0
    };
    let size = |n: u64| human_size_precision(n, 3);
    json!({
        "Container": key,
        "Name": c.config.name,
        "ID": id,
        "CPUPerc": format!("{cpu:.2}%"),
        "MemUsage": format!("{} / {}", bytes_size(mem), bytes_size(limit)),
        "MemPerc": format!("{mem_perc:.2}%"),
        "NetIO": format!("{} / {}", size(b.net.0), size(b.net.1)),
        "BlockIO": format!("{} / {}", size(blk.0), size(blk.1)),
        "PIDs": pids.to_string(),
    })
}

fn stats_title(f: &str) -> String {
    match f {
        "ID" => "CONTAINER ID",
        "Container" => "CONTAINER",
        "Name" => "NAME",
        "CPUPerc" => "CPU %",
        "MemUsage" => "MEM USAGE / LIMIT",
        "MemPerc" => "MEM %",
        "NetIO" => "NET I/O",
        "BlockIO" => "BLOCK I/O",
        "PIDs" => "PIDS",
        other => return other.to_uppercase(),
    }
    .to_string()
}

/// `kiln stats`: Docker's columns; `--no-stream` prints once, else the table is redrawn
/// every second until interrupted.
pub fn stats_cmd(containers: &Containers, a: &StatsArgs) -> i32 {
    const TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";
    let template = match a.format.as_deref() {
        None | Some("" | "table") => TABLE.to_string(),
        Some("json") => "{{json .}}".to_string(),
        Some(f) => f.to_string(),
    };
    let format = match Format::parse(&template) {
        Ok(f) => f,
        Err(e) => return e.report(Report::List),
    };
    let mut prev: BTreeMap<String, Sample> = BTreeMap::new();
    loop {
        // Named containers must exist; without names, the running ones (or all with -a).
        let list: Vec<(String, Container)> = if a.containers.is_empty() {
            match containers.list() {
                Ok(l) => l
                    .into_iter()
                    .filter(|c| a.all || c.is_running())
                    .map(|c| (c.short_id().to_string(), c))
                    .collect(),
                Err(e) => return fail(e),
            }
        } else {
            let mut v = Vec::new();
            for n in &a.containers {
                match containers.find(n) {
                    Ok(c) => v.push((n.clone(), c)),
                    Err(e) => return fail(e),
                }
            }
            v
        };
        let first: Vec<Sample> = list
            .iter()
            .map(|(_, c)| prev.remove(&c.config.id).unwrap_or_else(|| sample(c)))
            .collect();
        if first.iter().any(|s| s.at.elapsed() < SAMPLE) {
            std::thread::sleep(SAMPLE);
        }
        let mut rows = Vec::new();
        let host_mem = host_memory();
        for ((key, c), s1) in list.iter().zip(&first) {
            let s2 = sample(c);
            rows.push(Row::from(stats_row(c, key, a.no_trunc, s1, &s2, host_mem)));
            prev.insert(c.config.id.clone(), s2);
        }
        let text = match format.render(&rows, &stats_title) {
            Ok(t) => t,
            Err(e) => return e.report(Report::List),
        };
        if a.no_stream {
            out(&text);
            return 0;
        }
        // Clear the screen and redraw, as `docker stats` does.
        out(&format!("\x1b[2J\x1b[H{text}"));
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `kiln top`: the container's processes (those in its cgroup), with `ps -ef`'s columns;
/// with ps options, the host's `ps` output filtered to them (Docker's way).
pub fn top_cmd(containers: &Containers, a: &TopArgs) -> i32 {
    let c = match containers.find(&a.container) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let cg = match ops::running_cgroup(&c) {
        Ok(cg) => cg,
        Err(e) => return fail(e),
    };
    let pids = cg.procs();
    let lines = if a.ps_options.is_empty() {
        own_listing(&pids)
    } else {
        match ps_listing(&a.ps_options, &pids) {
            Ok(l) => l,
            Err(e) => return fail(e),
        }
    };
    out(&top_table(&lines));
    0
}

/// Aligns columns as `docker top` (tabwriter: minimum width 20, padding 3).
fn top_table(rows: &[Vec<String>]) -> String {
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; ncols];
    for r in rows {
        for (i, c) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            widths[i] = widths[i].max((c.chars().count() + 3).max(20));
        }
    }
    let mut s = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(widths[i] - c.chars().count()));
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// Runs the host's `ps` with `opts` and keeps the header and the rows of `pids`.
fn ps_listing(opts: &[String], pids: &[i32]) -> Result<Vec<Vec<String>>, String> {
    let o = Command::new("ps")
        .args(opts)
        .output()
        .map_err(|e| format!("running ps: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "ps {}: {}",
            opts.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let col = header
        .iter()
        .position(|h| h == "PID")
        .ok_or_else(|| "Couldn't find PID field in ps output".to_string())?;
    let n = header.len();
    let mut rows = vec![header];
    for l in lines {
        let mut f: Vec<String> = l
            .split_whitespace()
            .take(n - 1)
            .map(str::to_string)
            .collect();
        // The last column (the command) keeps its spaces.
        let rest = l
            .split_whitespace()
            .skip(n - 1)
            .collect::<Vec<_>>()
            .join(" ");
        f.push(rest);
        if f.get(col)
            .and_then(|p| p.parse::<i32>().ok())
            .is_some_and(|p| pids.contains(&p))
        {
            rows.push(f);
        }
    }
    Ok(rows)
}

/// `ps -ef`'s columns for `pids`, read from /proc.
fn own_listing(pids: &[i32]) -> Vec<Vec<String>> {
    let mut rows = vec![["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()];
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let users = passwd_names();
    for &pid in pids {
        let Some(p) = proc_info(pid) else { continue };
        let cpu_secs = (p.utime + p.stime) / hz;
        let started = p.starttime as f64 / hz as f64;
        let elapsed = (uptime - started).max(1.0);
        let c = ((p.utime + p.stime) as f64 / hz as f64 / elapsed * 100.0) as u64;
        let start = btime + p.starttime / hz;
        rows.push(vec![
            users
                .get(&p.uid)
                .cloned()
                .unwrap_or_else(|| p.uid.to_string()),
            pid.to_string(),
            p.ppid.to_string(),
            c.to_string(),
            stime(start, now),
            tty_name(p.tty),
            format!(
                "{:02}:{:02}:{:02}",
                cpu_secs / 3600,
                cpu_secs / 60 % 60,
                cpu_secs % 60
            ),
            p.cmd,
        ]);
    }
    rows
}

struct ProcInfo {
    ppid: i32,
    tty: u64,
    utime: u64,
    stime: u64,
    starttime: u64,
    uid: u32,
    cmd: String,
}

fn proc_info(pid: i32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: fields follow the last ')'.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(').map_or("", |(_, c)| c);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state).
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmd = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    Some(ProcInfo {
        ppid: f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0),
        tty: num(4),
        utime: num(11),
        stime: num(12),
        starttime: num(19),
        uid,
        cmd: if cmd.is_empty() {
            format!("[{comm}]")
        } else {
            cmd
        },
    })
}

/// User names of the host's `/etc/passwd` (what `ps` shows for `docker top`).
fn passwd_names() -> BTreeMap<u32, String> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((f.get(2)?.parse().ok()?, f.first()?.to_string()))
        })
        .collect()
}

/// `ps`'s STIME: `HH:MM` today (UTC), else `MonDD`.
fn stime(start: u64, now: u64) -> String {
    if start / 86400 == now / 86400 {
        return format!("{:02}:{:02}", start / 3600 % 24, start / 60 % 60);
    }
    let (_, m, d) = Timestamp::from_secs(i64::try_from(start).unwrap_or(i64::MAX)).date();
    format!("{}{:02}", MONTHS[(m - 1) as usize], d)
}

/// `pts/N`, `ttyN` or `?` for a `tty_nr`.
fn tty_name(nr: u64) -> String {
    let major = (nr >> 8) & 0xfff;
    let minor = (nr & 0xff) | ((nr >> 12) & 0xfff00);
    match major {
        0 => "?".into(),
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 => format!("tty{minor}"),
        _ => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_columns_format_like_ps() {
        assert_eq!(tty_name(0), "?");
        assert_eq!(tty_name(136 << 8), "pts/0");
        assert_eq!(tty_name((136 << 8) | 3), "pts/3");
        // 2026-11-29 05:00 UTC and a day earlier.
        let t = 1_795_928_400;
        assert_eq!(stime(t, t + 60), "05:00");
        assert_eq!(stime(t - 86_400, t), "Nov28");
        let table = top_table(&[
            vec!["UID".into(), "PID".into(), "CMD".into()],
            vec!["root".into(), "42".into(), "sleep 100".into()],
        ]);
        assert_eq!(
            table,
            format!(
                "UID{}PID{}CMD\nroot{}42{}sleep 100\n",
                " ".repeat(17),
                " ".repeat(17),
                " ".repeat(16),
                " ".repeat(18)
            )
        );
    }

    #[test]
    fn stats_sizes_are_dockers() {
        assert_eq!(bytes_size(0), "0B");
        assert_eq!(bytes_size(1_597_440), "1.523MiB");
        assert_eq!(bytes_size(32 << 20), "32MiB");
        assert_eq!(stats_title("MemUsage"), "MEM USAGE / LIMIT");
    }
}
