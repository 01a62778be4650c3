//! `kiln exec`: a command run in a running container's namespaces, attached or detached.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use clap::Args;

use kiln::container::monitor::{self, resize};
use kiln::container::ops;
use kiln::container::Containers;
use kiln::executor::{self, Input, Output, StepIo, StepSpec};

use super::attach::RawMode;
use crate::cli::fail;
use crate::cli::tty::window_size;

/// `kiln exec`.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Detached mode: run command in the background
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// The container
    pub container: String,
    /// The command and its arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

// exec

pub(super) fn exec_cmd(root: &Path, containers: &Containers, a: &ExecArgs) -> i32 {
    let c = match containers.find(&a.container) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let Some(pidfd) = c.pidfd() else {
        return fail(format!("container {} is not running", c.config.id));
    };
    if c.paused {
        return fail(format!(
            "Container {} is paused, unpause the container before exec",
            c.config.id
        ));
    }
    // Docker's check: a terminal for the command needs one to read from.
    if a.tty && a.interactive && !a.detach && !io::stdin().is_terminal() {
        eprintln!("the input device is not a TTY");
        return 1;
    }
    if a.detach {
        // A detached exec is this same command, run in the background on its own session.
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("--root").arg(root).arg("exec");
        for e in &a.env {
            cmd.arg("-e").arg(e);
        }
        if let Some(w) = &a.workdir {
            cmd.arg("-w").arg(w);
        }
        if let Some(u) = &a.user {
            cmd.arg("-u").arg(u);
        }
        cmd.arg(&c.config.id).arg("--").args(&a.command);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        return match cmd.spawn() {
            Ok(_) => 0,
            Err(e) => fail(e),
        };
    }
    let mut command = a.command.clone();
    if command.first().is_some_and(|c| c == "--") {
        command.remove(0);
    }
    if command.is_empty() {
        return fail("exec needs a command");
    }
    let mut spec = c.config.step_spec(root.join("tmp"), command);
    let env = &mut spec.env;
    for e in &a.env {
        if let Some((k, _)) = e.split_once('=') {
            env.retain(|x| x.split_once('=').map_or(x.as_str(), |(key, _)| key) != k);
            env.push(e.clone());
        } else if let Ok(v) = std::env::var(e) {
            env.retain(|x| x.split_once('=').map_or(x.as_str(), |(key, _)| key) != e);
            env.push(format!("{e}={v}"));
        }
    }
    if a.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    if let Some(w) = a.workdir.as_ref().filter(|w| !w.is_empty()) {
        spec.workdir = w.clone();
    }
    if let Some(u) = &a.user {
        spec.user = u.clone();
    }
    let mut join = ops::cgroup_joiner(&c.config.id);
    let result = if a.tty {
        exec_tty(&spec, &pidfd, a.interactive, &mut join)
    } else {
        executor::exec_in(
            &spec,
            pidfd.as_fd(),
            StepIo {
                stdin: if a.interactive {
                    Input::Inherit
                } else {
                    Input::Null
                },
                stdout: Output::Inherit,
                stderr: Output::Inherit,
                on_start: None,
                console: None,
                on_ready: Some(&mut join),
            },
        )
    };
    match result {
        Ok(executor::ExitStatus::Code(code)) => code,
        Ok(executor::ExitStatus::Signal(s)) => 128 + s,
        Err(e) => {
            // Docker 28 gives 126 for every command its runtime could not start, found or
            // not (its `run` gives 127 for a missing one).
            let msg = monitor::start_failure_message(&e);
            match msg.strip_prefix("failed to create task for container: ") {
                Some(runtime) => eprintln!("OCI runtime exec failed: {runtime}"),
                // A missing user is Docker's own check, in its own words.
                None => eprintln!("{msg}"),
            }
            126
        }
    }
}

/// `exec -t`: the command gets a pty from the container's devpts; this process relays the
/// terminal to its master end.
fn exec_tty(
    spec: &StepSpec,
    pidfd: &OwnedFd,
    interactive: bool,
    join: &mut dyn FnMut(libc::pid_t) -> io::Result<()>,
) -> Result<executor::ExitStatus, executor::ExecError> {
    let raw = if interactive {
        Some(RawMode::enter())
    } else {
        None
    };
    let mut pump: Option<std::thread::JoinHandle<()>> = None;
    let mut on_console = |master: OwnedFd| {
        if let Some((r, c)) = window_size(io::stdout().as_raw_fd()) {
            resize(master.as_raw_fd(), r, c);
        }
        if interactive {
            if let Ok(m_in) = master.try_clone() {
                std::thread::spawn(move || {
                    let mut f = File::from(m_in);
                    let mut buf = [0u8; 8192];
                    let mut input = io::stdin().lock();
                    while let Ok(n) = input.read(&mut buf) {
                        if n == 0 || f.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        }
        pump = Some(std::thread::spawn(move || {
            let mut f = File::from(master);
            let mut buf = [0u8; 8192];
            let mut stdout = io::stdout();
            // EIO once the last process holding the terminal is gone.
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = stdout.write_all(&buf[..n]);
                let _ = stdout.flush();
            }
        }));
    };
    let res = executor::exec_in(
        spec,
        pidfd.as_fd(),
        StepIo {
            console: Some(&mut on_console),
            on_ready: Some(join),
            ..Default::default()
        },
    );
    if let Some(p) = pump {
        let _ = p.join();
    }
    drop(raw);
    res
}
