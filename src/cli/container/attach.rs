//! `kiln attach` and the terminal side of every attached container: raw mode, window size,
//! Docker's detach keys, and the relay between the terminal and the attach socket.

use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;

use kiln::container::attach::{self, Frame, Streams};
use kiln::container::Container;

use crate::cli::fail;

/// `kiln attach`.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach STDIN
    #[arg(long = "no-stdin")]
    pub no_stdin: bool,
    /// The container
    pub container: String,
}

/// Attaches this terminal to a running container; returns its exit code (0 on detach).
pub(super) fn attach_cmd(c: &Container, stdin: bool) -> i32 {
    let streams = Streams {
        stdin,
        stdout: true,
        stderr: true,
    };
    match attach::connect(&c.dir, streams) {
        Ok(sock) => attach_loop(sock, stdin, c.config.tty),
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
/// user detaches (0).
pub(super) fn attach_loop(sock: UnixStream, stdin: bool, tty: bool) -> i32 {
    let raw = if tty && stdin {
        Some(RawMode::enter())
    } else {
        None
    };
    let writer = match sock.try_clone() {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => return fail(e),
    };
    let detached = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if tty {
        let w = writer.clone();
        std::thread::spawn(move || {
            let mut last = None;
            loop {
                let size = crate::cli::tty::window_size(io::stdout().as_raw_fd())
                    .or_else(|| crate::cli::tty::window_size(io::stdin().as_raw_fd()));
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
    if stdin {
        let w = writer.clone();
        let detached = detached.clone();
        let keys = tty;
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
                    detached.store(true, std::sync::atomic::Ordering::SeqCst);
                    let _ = s.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
        });
    }
    let mut reader = sock;
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
    drop(raw);
    if detached.load(std::sync::atomic::Ordering::SeqCst) {
        eprintln!("read escape sequence");
        return 0;
    }
    code
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
