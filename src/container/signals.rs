//! Signals for containers: names as Docker accepts them (`SIGTERM`, `TERM`, `15`), and the
//! ones a foreground `run` or `attach` passes on to the container (Docker's `--sig-proxy`).

use std::path::Path;

use super::{Container, ContainerError, Result};

/// The signals an attached client passes on to the container. Docker's CLI passes every
/// signal but those of its own plumbing; these are the ones a user or a supervisor sends
/// (SIGCHLD, SIGPIPE and SIGWINCH stay the client's own; SIGKILL and SIGSTOP cannot be
/// caught).
pub const PROXIED: &[i32] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTERM,
];

/// Sends `signal` to the main process of the container in `dir`, if it runs, without
/// marking the container stopped (unlike [`super::ops::kill`]): its restart policy still
/// applies, as with Docker's proxied signals. A container that is not running is not an
/// error (its process may have just ended).
pub fn forward(dir: &Path, signal: i32) -> Result<()> {
    let c = Container::load(dir)?;
    if let Some(fd) = c.pidfd() {
        match super::pidfd_signal(&fd, signal) {
            Ok(()) => {}
            // Exited between the lookup and the signal.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => return Err(ContainerError::Signal(e)),
        }
    }
    Ok(())
}

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// Parses a signal: a number, or a name with or without `SIG`, any case; `RTMIN+n` too.
pub fn parse(s: &str) -> Result<i32> {
    let bad = || ContainerError::Invalid(format!("invalid signal: {s}"));
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(n) = name.strip_prefix("RTMIN+") {
        let n: i32 = n.parse().map_err(|_| bad())?;
        let sig = libc::SIGRTMIN() + n;
        return if sig <= libc::SIGRTMAX() {
            Ok(sig)
        } else {
            Err(bad())
        };
    }
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_in_every_docker_form() {
        assert_eq!(parse("SIGTERM").expect("x"), libc::SIGTERM);
        assert_eq!(parse("term").expect("x"), libc::SIGTERM);
        assert_eq!(parse("9").expect("x"), libc::SIGKILL);
        assert_eq!(parse("SIGUSR1").expect("x"), libc::SIGUSR1);
        assert_eq!(parse("RTMIN+1").expect("x"), libc::SIGRTMIN() + 1);
        for bad in ["", "0", "65", "SIGNOPE", "RTMIN+99"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
