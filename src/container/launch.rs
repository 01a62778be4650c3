//! Starting a container: spawns its monitor (this same `kiln` binary, as the hidden
//! `container monitor` command) and waits on the readiness pipe for the monitor to report
//! that the container started or why it could not (see [`super::monitor`] for the words).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::attach::{self, Streams};
use super::{ops, Container, ContainerError};

/// Docker's exit code for errors of the tool itself (not of the container).
pub const EXIT_TOOL: i32 = 125;

/// How long a start waits for the monitor of a container that has just exited to finish.
const SETTLE: Duration = Duration::from_secs(5);

/// Why a container could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its monitor still runs.
    #[error("container {0} is already running")]
    AlreadyRunning(String),
    /// The readiness pipe could not be made.
    #[error("pipe: {0}")]
    Pipe(#[source] io::Error),
    /// The monitor process could not be spawned.
    #[error("starting the container monitor: {0}")]
    Spawn(#[source] io::Error),
    /// The monitor reported that the container failed to start, with Docker's exit code.
    #[error("{message}")]
    Failed {
        /// The exit code to give (125 for kiln's errors, 126/127 for the command).
        code: i32,
        /// The monitor's words.
        message: String,
    },
    /// The monitor went away without a word.
    #[error("the container monitor exited before starting the container")]
    MonitorGone,
    /// The attach socket could not be reached.
    #[error("attaching to the container: {0}")]
    Attach(#[source] io::Error),
    /// Looking up or loading the container failed.
    #[error(transparent)]
    Container(#[from] ContainerError),
}

impl StartError {
    /// The exit code Docker's CLI gives for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Failed { code, .. } => *code,
            _ => EXIT_TOOL,
        }
    }
}

/// Starts `c` in the background; returns once its process runs.
pub fn start_detached(root: &Path, c: &Container) -> Result<(), StartError> {
    let mut ready = spawn_monitor(root, c, false)?;
    parse_ready(&ready.line())
}

/// Starts `c` with this process attached before its command runs (so no output is lost);
/// returns the attach connection once the process runs. `size` is the terminal's (rows,
/// columns): a container with a tty gets its console sized before its command starts.
pub fn start_attached(
    root: &Path,
    c: &Container,
    stdin: bool,
    size: Option<(u16, u16)>,
) -> Result<UnixStream, StartError> {
    let mut ready = spawn_monitor(root, c, true)?;
    let first = ready.line();
    if first != "attach" {
        parse_ready(&first)?;
    }
    let streams = Streams {
        stdin,
        stdout: true,
        stderr: true,
        size,
    };
    let sock = attach::connect(&c.dir, streams).map_err(StartError::Attach)?;
    parse_ready(&ready.line())?;
    Ok(sock)
}

/// The read end of a monitor's readiness pipe.
struct ReadyPipe(File);

impl ReadyPipe {
    /// Reads one line (without its newline); empty once the monitor closed the pipe.
    fn line(&mut self) -> String {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while let Ok(1) = self.0.read(&mut b) {
            if b[0] == b'\n' {
                break;
            }
            line.push(b[0]);
        }
        String::from_utf8_lossy(&line).into_owned()
    }
}

/// Starts the monitor process for `c`; returns its readiness pipe.
fn spawn_monitor(root: &Path, c: &Container, wait_attach: bool) -> Result<ReadyPipe, StartError> {
    // A container that has just exited may still have its monitor recording that.
    let settled = c.is_running() || ops::wait_monitor_gone(c, SETTLE);
    if !settled || super::monitor_alive(&c.dir) {
        return Err(StartError::AlreadyRunning(c.config.name.clone()));
    }
    let (r, w) = super::monitor::pipe().map_err(StartError::Pipe)?;
    let mut cmd = monitor_command(root, &c.config.id, wait_attach);
    let wfd = w.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(wfd, 3) < 0 || libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(StartError::Spawn)?;
    drop(w);
    Ok(ReadyPipe(File::from(r)))
}

/// `kiln --root ROOT container monitor ID --ready-fd 3 [--wait-attach]`, detached from this
/// process's stdio.
fn monitor_command(root: &Path, id: &str, wait_attach: bool) -> Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let mut cmd = Command::new(exe);
    cmd.arg("--root")
        .arg(root)
        .args(["container", "monitor", id, "--ready-fd", "3"]);
    if wait_attach {
        cmd.arg("--wait-attach");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// The monitor's final word: `started`, or `error <code> <message>`.
fn parse_ready(line: &str) -> Result<(), StartError> {
    if line == "started" {
        return Ok(());
    }
    if let Some(rest) = line.strip_prefix("error ") {
        let (code, msg) = rest.split_once(' ').unwrap_or((rest, ""));
        return Err(StartError::Failed {
            code: code.parse().unwrap_or(EXIT_TOOL),
            message: msg.to_string(),
        });
    }
    Err(StartError::MonitorGone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_words_map_to_outcomes_and_exit_codes() {
        assert!(parse_ready("started").is_ok());
        let e = parse_ready("error 127 exec: \"nope\": not found").unwrap_err();
        assert!(matches!(e, StartError::Failed { code: 127, .. }));
        assert_eq!(e.exit_code(), 127);
        assert_eq!(e.to_string(), "exec: \"nope\": not found");
        // A garbled code still fails the start, as kiln's own error.
        assert_eq!(parse_ready("error x y").unwrap_err().exit_code(), EXIT_TOOL);
        // The monitor closed the pipe without a word.
        let e = parse_ready("").unwrap_err();
        assert!(matches!(e, StartError::MonitorGone));
        assert_eq!(e.exit_code(), EXIT_TOOL);
    }
}
