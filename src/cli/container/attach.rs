//! `kiln attach` and the terminal side of every attached container: raw mode, window size,
//! Docker's detach keys, and the relay between the terminal and the attach socket.

use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;

use kiln::container::attach::{self, Frame, Streams};
use kiln::container::{signals, Container};

use crate::cli::fail;

/// `kiln attach`.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach STDIN
    #[arg(long = "no-stdin")]
    pub no_stdin: bool,
    /// Proxy all received signals to the process
    #[arg(
        long = "sig-proxy",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value_t = true,
        default_missing_value = "true"
    )]
    pub sig_proxy: bool,
    /// The container
    pub container: String,
}

/// Attaches this terminal to a running container; returns its exit code (0 on detach).
/// With `sig_proxy`, signals sent to this process go on to the container.
pub(super) fn attach_cmd(c: &Container, stdin: bool, sig_proxy: bool) -> i32 {
    let streams = Streams {
        stdin,
        stdout: true,
        stderr: true,
        size: None,
    };
    match attach::connect(&c.dir, streams) {
        Ok(sock) => attach_loop(sock, stdin, c.config.tty, sig_proxy.then_some(&*c.dir)),
        Err(e) => fail(format!("attaching to {}: {e}", c.config.name)),
    }
}

/// Puts the terminal on stdin in raw mode until dropped.
pub(super) struct RawMode {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawMode {
    pub(super) fn enter() -> RawMode {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = io::stdin();
        if !stdin.is_terminal() {
            return RawMode { saved: None };
        }
        let Ok(saved) = tcgetattr(stdin.as_fd()) else {
            return RawMode { saved: None };
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(s) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                s,
            );
        }
    }
}

/// Scans typed bytes for Docker's detach keys, Ctrl-P Ctrl-Q.
#[derive(Default)]
struct DetachKeys {
    held: bool,
}

impl DetachKeys {
    /// The bytes to send on, and whether the sequence completed.
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len() + 1);
        for &b in input {
            if self.held {
                self.held = false;
                if b == 0x11 {
                    return (out, true);
                }
                out.push(0x10);
            }
            if b == 0x10 {
                self.held = true;
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// Relays the terminal to an attach connection until the container exits (its code) or the
/// user detaches (0). With `proxy` (the container's directory), the signals a user sends
/// this process go on to the container, as Docker's `--sig-proxy` does.
pub(super) fn attach_loop(sock: UnixStream, stdin: bool, tty: bool, proxy: Option<&Path>) -> i32 {
    let raw = if tty && stdin {
        Some(RawMode::enter())
    } else {
        None
    };
    let writer = match sock.try_clone() {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => return fail(e),
    };
    let detached = Arc::new(AtomicBool::new(false));
    if tty {
        relay_window_size(writer.clone());
    }
    if stdin {
        relay_stdin(writer.clone(), detached.clone(), tty);
    }
    let signals = sock
        .try_clone()
        .ok()
        .and_then(|s| SignalProxy::start(proxy.map(Path::to_path_buf), s));
    let code = relay_output(sock);
    let forced = signals.is_some_and(|s| s.stop());
    drop(raw);
    if forced {
        eprintln!("got 3 SIGTERM/SIGINTs, forcefully exiting");
        return 1;
    }
    if detached.load(Ordering::SeqCst) {
        eprintln!("read escape sequence");
        return 0;
    }
    code
}

/// The size of this process's terminal (stdout's, else stdin's), for a container with a tty.
pub(super) fn terminal_size(tty: bool) -> Option<(u16, u16)> {
    if !tty {
        return None;
    }
    crate::cli::tty::window_size(io::stdout().as_raw_fd())
        .or_else(|| crate::cli::tty::window_size(io::stdin().as_raw_fd()))
}

/// Sends the terminal's size now and whenever it changes.
fn relay_window_size(w: Arc<Mutex<UnixStream>>) {
    std::thread::spawn(move || {
        let mut last = None;
        loop {
            let size = terminal_size(true);
            if size.is_some() && size != last {
                if let Some((r, c)) = size {
                    let Ok(mut s) = w.lock() else { return };
                    if Frame::Resize(r, c).write_to(&mut *s).is_err() {
                        return;
                    }
                }
                last = size;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}

/// Sends what is typed to the container; with `keys` (a tty), Ctrl-P Ctrl-Q detaches.
fn relay_stdin(w: Arc<Mutex<UnixStream>>, detached: Arc<AtomicBool>, keys: bool) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut dk = DetachKeys::default();
        let mut input = io::stdin().lock();
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) | Err(_) => {
                    if let Ok(mut s) = w.lock() {
                        let _ = Frame::StdinClose.write_to(&mut *s);
                    }
                    return;
                }
                Ok(n) => n,
            };
            let (data, detach) = if keys {
                dk.feed(&buf[..n])
            } else {
                (buf[..n].to_vec(), false)
            };
            let Ok(mut s) = w.lock() else { return };
            if !data.is_empty() && Frame::Stdin(data).write_to(&mut *s).is_err() {
                return;
            }
            if detach {
                detached.store(true, Ordering::SeqCst);
                let _ = s.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    });
}

/// Writes the container's output until it exits; returns its exit code (0 if the
/// connection ends first).
fn relay_output(mut reader: UnixStream) -> i32 {
    let mut stdout = io::stdout();
    let mut stderr = io::stderr();
    let mut code = 0;
    loop {
        match Frame::read_from(&mut reader) {
            Ok(Some(Frame::Stdout(d))) => {
                let _ = stdout.write_all(&d);
                let _ = stdout.flush();
            }
            Ok(Some(Frame::Stderr(d))) => {
                let _ = stderr.write_all(&d);
                let _ = stderr.flush();
            }
            Ok(Some(Frame::Exit(c))) => {
                code = c;
                break;
            }
            Ok(Some(Frame::Error(m))) => {
                // The exit frame follows with the code (126 cannot run, 127 not found).
                eprintln!("kiln: {m}");
                code = 126;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    code
}

/// The write end of the pipe the signal handler reports to (-1 when none is installed).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; one byte from a valid buffer.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}

/// While attached: signals sent to this process are caught, passed on to the container
/// (when proxying), and counted: the third SIGINT or SIGTERM ends the attachment, leaving
/// the container as it is (Docker's "forcefully exiting"). Without proxying only SIGINT and
/// SIGTERM are caught, and only counted, as Docker's `--sig-proxy=false` does.
struct SignalProxy {
    caught: Vec<i32>,
    write: OwnedFd,
    thread: std::thread::JoinHandle<bool>,
}

impl SignalProxy {
    /// Installs the handlers; `sock` is shut down on the third SIGINT/SIGTERM.
    fn start(dir: Option<PathBuf>, sock: UnixStream) -> Option<SignalProxy> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
        let caught: Vec<i32> = if dir.is_some() {
            signals::PROXIED.to_vec()
        } else {
            vec![libc::SIGINT, libc::SIGTERM]
        };
        let thread = std::thread::spawn(move || {
            let mut read = std::fs::File::from(read);
            let mut b = [0u8; 1];
            let mut stops = 0;
            // Ends at EOF, when `stop` closes the write end.
            while let Ok(1) = read.read(&mut b) {
                let sig = i32::from(b[0]);
                if let Some(d) = &dir {
                    if let Err(e) = signals::forward(d, sig) {
                        eprintln!("kiln: passing signal {sig} on to the container: {e}");
                    }
                }
                if sig == libc::SIGINT || sig == libc::SIGTERM {
                    stops += 1;
                    if stops == 3 {
                        let _ = sock.shutdown(std::net::Shutdown::Both);
                        return true;
                    }
                }
            }
            false
        });
        SIGNAL_PIPE.store(write.as_raw_fd(), Ordering::SeqCst);
        for &sig in &caught {
            // SAFETY: the handler only writes one byte to a pipe, which is async-signal-safe.
            unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
        }
        Some(SignalProxy {
            caught,
            write,
            thread,
        })
    }

    /// Restores the default handlers; true if the user forced the end.
    fn stop(self) -> bool {
        for &sig in &self.caught {
            // SAFETY: restoring the default disposition.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
        SIGNAL_PIPE.store(-1, Ordering::SeqCst);
        drop(self.write);
        self.thread.join().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_are_ctrl_p_ctrl_q() {
        let mut d = DetachKeys::default();
        assert_eq!(d.feed(b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(d.feed(&[0x10, b'a']), (vec![0x10, b'a'], false));
        assert_eq!(d.feed(&[b'x', 0x10]), (vec![b'x'], false));
        assert_eq!(d.feed(&[0x11]), (vec![], true));
        let mut d = DetachKeys::default();
        assert_eq!(d.feed(&[0x10, 0x11, b'z']), (vec![], true));
    }
}
