//! `kiln debug shell` and `kiln build --on-error=shell`: a shell in a step's sandbox, on a
//! terminal relayed to the sandbox's own pty, or the step's inputs printed to do it by hand.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use kiln::build::debugshell::{
    self, DebugRecord, DebugShellError, Sandbox, ShellOptions, StepStatus, StepView,
};
use kiln::build::{BuildError, BuildRequest, BuildResult};
use kiln::executor::{ExitStatus, Input, Output, StepIo};
use kiln::store::Store;

use super::values::OnError;

/// `kiln debug shell`.
#[derive(clap::Args, Debug)]
pub struct ShellArgs {
    /// The step of the last build, by its number in the build's progress (`#7` or `7`);
    /// by default the one that failed
    #[arg(value_parser = parse_step)]
    pub step: Option<usize>,
    /// Run this instead of the image's shell (after `--`)
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `#7` or `7`.
fn parse_step(s: &str) -> Result<usize, String> {
    s.strip_prefix('#')
        .unwrap_or(s)
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a step number (as the build printed it: #7)"))
}

/// Standard input and output are both a terminal.
fn on_terminal() -> bool {
    io::stdin().is_terminal() && io::stdout().is_terminal()
}

/// `kiln debug shell [#]N [-- CMD...]`: the shell's exit code, or 1 when it cannot start.
pub fn shell_cmd(root: &Path, a: &ShellArgs) -> i32 {
    let store = match super::open_store(root) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let record = match debugshell::last_build(&store) {
        Ok(r) => r,
        Err(e) => return super::fail(e),
    };
    let Some(id) = a.step.or_else(|| record.failed()) else {
        return super::fail(format!(
            "the last build has no failed step: name one (kiln debug shell '#N')\n{}",
            step_list(&record)
        ));
    };
    let step = match record.step(id) {
        Ok(s) => s,
        Err(e @ DebugShellError::NoStep(_)) => {
            return super::fail(format!("{e}\n{}", step_list(&record)))
        }
        Err(e) => return super::fail(e),
    };
    let tty = on_terminal();
    let opts = ShellOptions {
        command: (!a.command.is_empty()).then(|| a.command.clone()),
        tty,
        ..Default::default()
    };
    let sandbox = match Sandbox::prepare(&store, &record, &step, &opts) {
        Ok(s) => s,
        Err(e) => return super::fail(e),
    };
    if tty {
        eprintln!("{}", opening(&step, &sandbox));
    }
    if !sandbox.withheld().is_empty() {
        eprintln!(
            "kiln: not mounted (their values are not recorded; `kiln build --on-error=shell \
             --debug-secrets` mounts them): {}",
            sandbox.withheld().join(", ")
        );
    }
    let status = if tty {
        run_on_terminal(&sandbox)
    } else {
        sandbox.run(StepIo {
            stdin: Input::Inherit,
            stdout: Output::Inherit,
            stderr: Output::Inherit,
            ..Default::default()
        })
    };
    match status {
        Ok(ExitStatus::Code(c)) => c,
        Ok(ExitStatus::Signal(s)) => 128 + s,
        Err(e) => super::fail(e),
    }
}

/// The steps of a build, one a line, for a message.
fn step_list(record: &DebugRecord) -> String {
    let status = |s: &StepStatus| match s {
        StepStatus::NotFinished => "not finished".to_string(),
        StepStatus::Done => "done".to_string(),
        StepStatus::Cached => "cached".to_string(),
        StepStatus::Failed { code, .. } => format!("failed, exit code {code}"),
    };
    let lines: Vec<String> = record
        .steps
        .iter()
        .map(|s| {
            format!(
                "  #{} [{}] {} ({})",
                s.id,
                s.stage,
                s.instruction,
                status(&s.status)
            )
        })
        .collect();
    format!("steps of the last build:\n{}", lines.join("\n"))
}

/// The line printed as a shell opens on a terminal.
fn opening(step: &StepView, sandbox: &Sandbox) -> String {
    let files = match step.status {
        StepStatus::Failed { .. } => "the files as the step left them",
        StepStatus::NotFinished => "the files before the step",
        _ => "the files after the step",
    };
    let mut instruction: String = step.instruction.chars().take(72).collect();
    if instruction.len() < step.instruction.len() {
        instruction.push('…');
    }
    format!(
        "kiln: step #{} [{}] {instruction}\nkiln: {} in its sandbox, on {files}; workdir {}, \
         user {}; nothing changed here is kept",
        step.id,
        step.stage,
        sandbox.spec().argv.join(" "),
        step.workdir,
        shown_user(&step.user),
    )
}

fn shown_user(user: &str) -> &str {
    if user.is_empty() {
        "root"
    } else {
        user
    }
}

/// `build --on-error=shell`, once the build has ended: when a RUN step failed, a shell in its
/// sandbox (on a terminal) or how to open one (elsewhere). The build's result is returned
/// unchanged: the caller reports it, and exits with its code.
pub fn after_build(
    root: &Path,
    store: &Store,
    req: &BuildRequest,
    args: &super::build::BuildArgs,
    result: Result<BuildResult, BuildError>,
) -> Result<BuildResult, BuildError> {
    if args.on_error == OnError::Shell {
        if let Err(BuildError::RunFailed { message, .. }) = &result {
            open_failed(root, store, req, args.debug_secrets, message);
        }
    }
    result
}

/// The shell (or the instructions) for the failed step of this process's build.
fn open_failed(root: &Path, store: &Store, req: &BuildRequest, debug_secrets: bool, message: &str) {
    // This process's build, even if another build ended meanwhile.
    let found = debugshell::build_of_process(store, std::process::id()).and_then(|r| {
        let id = r.failed().ok_or(DebugShellError::NoBuild)?;
        let step = r.step(id)?;
        Ok((r, step))
    });
    let (record, step) = match found {
        Ok(f) => f,
        Err(e) => {
            eprintln!("kiln: --on-error=shell: cannot find the failed step: {e}");
            return;
        }
    };
    if !on_terminal() {
        eprint!("{}", by_hand(root, &step));
        return;
    }
    let opts = ShellOptions {
        secrets: debug_secrets.then_some(&req.secrets),
        ssh: debug_secrets.then_some(&req.ssh),
        ignore: Some(&req.ignore),
        tty: true,
        command: None,
        // SIGTERM to kiln (its handler sets the build's flag) ends the shell too.
        cancel: req.cancel.clone(),
    };
    let sandbox = match Sandbox::prepare(store, &record, &step, &opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "kiln: --on-error=shell: cannot open a shell in step #{}: {e}",
                step.id
            );
            return;
        }
    };
    eprintln!("error: {message}");
    eprintln!("{}", opening(&step, &sandbox));
    if !sandbox.withheld().is_empty() {
        eprintln!(
            "kiln: not mounted without --debug-secrets: {}",
            sandbox.withheld().join(", ")
        );
    }
    eprintln!("kiln: exit the shell to end the build (it fails, as it would have)");
    if let Err(e) = run_on_terminal(&sandbox) {
        eprintln!("kiln: the shell in step #{} failed: {e}", step.id);
    }
    drop(sandbox);
}

/// Without a terminal: the command that opens the shell later, and the step's inputs.
fn by_hand(root: &Path, step: &StepView) -> String {
    let root_flag = if root == super::default_root() {
        String::new()
    } else {
        format!("--root {} ", quote(&root.display().to_string()))
    };
    let mut out = format!(
        "kiln: --on-error=shell needs a terminal on standard input and output; to look \
         inside step #{id} later (its files are kept until the next build ends):\n  \
         kiln {root_flag}debug shell '#{id}'\nstep #{id} [{}] {}\n",
        step.stage,
        step.instruction,
        id = step.id,
    );
    let mut line = |k: &str, v: &str| out.push_str(&format!("  {k:<9} {v}\n"));
    if let Some(c) = &step.command {
        let words: Vec<String> = c.iter().map(|w| quote(w)).collect();
        line("command:", &words.join(" "));
    }
    line("workdir:", &step.workdir);
    line("user:", shown_user(&step.user));
    line("network:", step.network.name());
    for e in &step.env {
        line("env:", e);
    }
    for m in &step.mounts {
        line("mount:", &m.describe());
    }
    out
}

/// A word as a POSIX shell reads it back.
fn quote(w: &str) -> String {
    let plain = !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// The terminal in raw mode until dropped, so every key reaches the shell's own terminal.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        if tcsetattr(&stdin, SetArg::TCSANOW, &raw).is_err() {
            return RawMode(None);
        }
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

/// Runs the sandbox with a terminal from its own devpts, this terminal relayed to it.
fn run_on_terminal(sandbox: &Sandbox) -> Result<ExitStatus, DebugShellError> {
    let raw = RawMode::enter();
    let mut pump: Option<std::thread::JoinHandle<()>> = None;
    let mut on_console = |master: OwnedFd| {
        if let Some((rows, cols)) = super::tty::window_size(io::stdout().as_raw_fd()) {
            kiln::container::monitor::resize(master.as_raw_fd(), rows, cols);
        }
        if let Ok(input) = master.try_clone() {
            // Left blocked on standard input when the shell ends; the process ends soon after.
            std::thread::spawn(move || copy(io::stdin().lock(), File::from(input)));
        }
        pump = Some(std::thread::spawn(move || {
            // EIO once the shell, the last holder of its terminal, is gone.
            copy(File::from(master), io::stdout());
        }));
    };
    let status = sandbox.run(StepIo {
        console: Some(&mut on_console),
        ..Default::default()
    });
    if let Some(p) = pump {
        let _ = p.join();
    }
    drop(raw);
    status
}

/// Copies until either end closes or fails, flushing each piece.
fn copy(mut from: impl Read, mut to: impl Write) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_named_as_the_progress_prints_them() {
        assert_eq!(parse_step("#7"), Ok(7));
        assert_eq!(parse_step("12"), Ok(12));
        for bad in ["#", "#0", "x", "-1", "#7a", ""] {
            assert!(parse_step(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn words_are_quoted_for_a_shell() {
        assert_eq!(quote("/bin/sh"), "/bin/sh");
        assert_eq!(quote("touch /made && false"), "'touch /made && false'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }
}
