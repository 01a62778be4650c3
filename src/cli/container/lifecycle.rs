//! `kiln start`, `stop`, `restart`, `kill`, `rm` and `container prune`.

use std::io::IsTerminal;
use std::path::Path;

use clap::Args;

use kiln::container::launch::{self, StartError};
use kiln::container::ops;
use kiln::container::{signals, ContainerError, Containers};

use super::attach::{attach_cmd, attach_loop};
use crate::cli::{fail, out};

/// `kiln start`.
#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short = 'a', long)]
    pub attach: bool,
    /// Attach container's STDIN
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Containers
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `kiln stop` / `kiln restart`.
#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(short = 't', long = "time", visible_alias = "timeout")]
    pub time: Option<u32>,
    /// Signal to send to the container
    #[arg(short = 's', long)]
    pub signal: Option<String>,
    /// Containers
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `kiln kill`.
#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short = 's', long, default_value = "KILL")]
    pub signal: String,
    /// Containers
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `kiln rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short = 'v', long)]
    pub volumes: bool,
    /// Containers
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `kiln container prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
}

pub(super) fn start_cmd(root: &Path, containers: &Containers, a: &StartArgs) -> i32 {
    if a.attach || a.interactive {
        if a.containers.len() > 1 {
            return fail("you cannot start and attach multiple containers at once");
        }
        let c = match containers.find(&a.containers[0]) {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let stdin = a.interactive && c.config.open_stdin;
        if stdin && c.config.tty && !std::io::stdin().is_terminal() {
            eprintln!("the input device is not a TTY");
            return 1;
        }
        if c.is_running() {
            return attach_cmd(&c, stdin, true);
        }
        return match launch::start_attached(
            root,
            &c,
            stdin,
            super::attach::terminal_size(c.config.tty),
        ) {
            Ok(sock) => attach_loop(sock, stdin, c.config.tty, Some(&c.dir)),
            Err(e) => fail(e),
        };
    }
    let mut code = 0;
    for name in &a.containers {
        let res = containers
            .find(name)
            .map_err(StartError::from)
            .and_then(|c| {
                if c.is_running() {
                    Ok(())
                } else {
                    launch::start_detached(root, &c)
                }
            });
        match res {
            Ok(()) => out(&format!("{name}\n")),
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                code = 1;
            }
        }
    }
    if code != 0 {
        eprintln!(
            "Error: failed to start containers: {}",
            a.containers.join(", ")
        );
    }
    code
}

/// `kill`: signals each running container; a stopped or unknown one is an error in
/// Docker's words, and the exit code is 1.
pub(super) fn kill_cmd(containers: &Containers, a: &KillArgs) -> i32 {
    let sig = match signals::parse(&a.signal) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut code = 0;
    for name in &a.containers {
        let res = containers.find(name).and_then(|c| {
            if c.is_running() {
                ops::kill(&c, sig)
            } else {
                Err(ContainerError::State(format!(
                    "Container {} is not running",
                    c.config.id
                )))
            }
        });
        match res {
            Ok(()) => out(&format!("{name}\n")),
            Err(e) => {
                eprintln!("Error response from daemon: Cannot kill container: {name}: {e}");
                code = 1;
            }
        }
    }
    code
}

pub(super) fn rm_cmd(containers: &Containers, a: &RmArgs) -> i32 {
    let mut code = 0;
    for name in &a.containers {
        let res = containers.find(name).and_then(|c| {
            ops::remove(containers, &c, a.force)?;
            if a.volumes {
                for m in c.config.mounts.iter().filter(|m| m.kind == "volume") {
                    // Anonymous volumes have 64-hex names.
                    if m.name.len() == 64 {
                        if let Some(vol) = m.source.parent() {
                            let _ = std::fs::remove_dir_all(vol);
                        }
                    }
                }
            }
            Ok(())
        });
        match res {
            Ok(()) => out(&format!("{name}\n")),
            Err(e) => code = fail(e),
        }
    }
    code
}

pub(super) fn prune_cmd(containers: &Containers) -> i32 {
    let list = match containers.list() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let mut text = String::from("Deleted Containers:\n");
    let mut any = false;
    for c in list.iter().filter(|c| !c.is_running()) {
        if ops::remove(containers, c, false).is_ok() {
            text.push_str(&format!("{}\n", c.config.id));
            any = true;
        }
    }
    containers.clean_leftovers();
    if any {
        text.push('\n');
    } else {
        text.clear();
    }
    text.push_str("Total reclaimed space: 0B\n");
    out(&text);
    0
}
