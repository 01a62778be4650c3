//! `kiln logs`: a container's log, windowed by time, tailed and followed.

use std::io::{self, Write};
use std::time::Duration;

use clap::Args;

use kiln::common::time::Timestamp;
use kiln::container::logs;
use kiln::container::{Container, Containers};

use crate::cli::fail;

/// `kiln logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs ("all" for all)
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Show logs since a timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m)
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m)
    #[arg(long)]
    pub until: Option<String>,
    /// The container
    pub container: String,
}

// logs

pub(super) fn logs_cmd(containers: &Containers, a: &LogsArgs) -> i32 {
    let c = match containers.find(&a.container) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let tail: Option<usize> = match a.tail.as_str() {
        "all" | "-1" => None,
        n => match n.parse() {
            Ok(n) => Some(n),
            Err(_) => return fail(format!("invalid value for --tail: {n:?}")),
        },
    };
    let now = Timestamp::now();
    let bound = |v: &Option<String>| {
        v.as_deref()
            .map(|s| kiln::common::time::parse_time_filter(s, now))
            .transpose()
    };
    let (since, until) = match (bound(&a.since), bound(&a.until)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    let in_window = |e: &logs::Entry| {
        if since.is_none() && until.is_none() {
            return true;
        }
        let Ok(t) = Timestamp::parse_rfc3339(&e.time) else {
            return true;
        };
        since.is_none_or(|s| t >= s) && until.is_none_or(|u| t <= u)
    };
    let mut reader = logs::Reader::new(&c.dir);
    let mut stdout = io::stdout();
    let mut stderr = io::stderr();
    let window = |entries: Vec<logs::Entry>| -> Vec<logs::Entry> {
        entries.into_iter().filter(|e| in_window(e)).collect()
    };
    let mut print = |entries: &[logs::Entry]| {
        for e in entries {
            let mut line = String::new();
            if a.timestamps {
                line.push_str(&e.time);
                line.push(' ');
            }
            line.push_str(&e.log);
            let w: &mut dyn Write = if e.stream == "stderr" {
                &mut stderr
            } else {
                &mut stdout
            };
            let _ = w.write_all(line.as_bytes());
            let _ = w.flush();
        }
    };
    let first = match reader.next_entries() {
        Ok(e) => window(e),
        Err(e) => return fail(e),
    };
    let skip = tail.map_or(0, |n| first.len().saturating_sub(n));
    print(&first[skip..]);
    if !a.follow || until.is_some_and(|u| u <= now) {
        return 0;
    }
    loop {
        let live = Container::load(&c.dir)
            .map(|c| c.is_running() || kiln::container::monitor_alive(&c.dir))
            .unwrap_or(false);
        match reader.next_entries() {
            Ok(e) => print(&window(e)),
            Err(e) => return fail(e),
        }
        if !live {
            return 0;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
