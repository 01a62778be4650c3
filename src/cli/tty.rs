//! `--progress=tty`: a live view of the build on a terminal, as BuildKit draws it. Finished
//! steps are printed once, in the plain form, above a live region that shows each running
//! step with its elapsed time and the last lines of its output; the region is redrawn in
//! place (cursor up, clear to the end of the screen) and removed at the end, leaving the
//! plain summary.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kiln::build::{BuildEvent, Progress};

/// Output lines kept per running step.
const TAIL: usize = 5;

/// A step the view knows about.
struct Step {
    header: String,
    started: f64,
    miss: Option<String>,
    tail: VecDeque<String>,
}

/// What the view shows, fed with events and the time (seconds since the build started);
/// `paint` turns it into the bytes for the terminal. No I/O, so frames can be tested.
pub struct View {
    running: BTreeMap<usize, Step>,
    /// Lines to print once, above the live region.
    pending: Vec<String>,
    /// Lines the live region took on screen the last time it was drawn.
    drawn: usize,
    /// Terminal width: longer lines are cut so none wraps (the redraw counts lines).
    width: usize,
    done: usize,
    total_seen: usize,
}

impl View {
    pub fn new(width: usize) -> View {
        View {
            running: BTreeMap::new(),
            pending: Vec::new(),
            drawn: 0,
            width: width.max(20),
            done: 0,
            total_seen: 0,
        }
    }

    /// Take one build event at time `now`.
    pub fn apply(&mut self, e: BuildEvent, now: f64) {
        match e {
            BuildEvent::Step { id, stage, text } => {
                self.total_seen += 1;
                self.running.insert(
                    id,
                    Step {
                        header: format!("#{id} [{stage}] {text}"),
                        started: now,
                        miss: None,
                        tail: VecDeque::new(),
                    },
                );
            }
            BuildEvent::Cached { id, from: None } => self.finish(id, format!("#{id} CACHED")),
            BuildEvent::Cached { id, from: Some(c) } => {
                self.finish(id, format!("#{id} CACHED (from {c})"))
            }
            BuildEvent::Miss { id, reason } => {
                // Printed with the step's header once it is done.
                if let Some(s) = self.running.get_mut(&id) {
                    s.miss = Some(format!("#{id} cache miss: {reason}"));
                }
            }
            BuildEvent::Explain { id, lines } => {
                self.pending
                    .extend(lines.into_iter().map(|l| format!("#{id}   {l}")));
            }
            BuildEvent::Done { id, seconds } => {
                if self.running.contains_key(&id) {
                    self.finish(id, format!("#{id} DONE {seconds:.1}s"));
                }
            }
            BuildEvent::Output { id, text } => {
                for line in text.lines() {
                    self.output(id, line);
                }
            }
            BuildEvent::Warning(w) => self.pending.push(format!("[Warning] {w}")),
        }
    }

    fn output(&mut self, id: usize, line: &str) {
        if let Some(s) = self.running.get_mut(&id) {
            if s.tail.len() == TAIL {
                s.tail.pop_front();
            }
            s.tail.push_back(line.to_string());
        }
    }

    /// A step is over: its header and last word go above the live region.
    fn finish(&mut self, id: usize, last: String) {
        if let Some(s) = self.running.remove(&id) {
            self.done += 1;
            self.pending.push(s.header);
            self.pending.extend(s.miss);
            self.pending.push(last);
        }
    }

    /// The live region at `now`: a status line, then each running step with its elapsed
    /// time and the last lines of its output.
    pub fn live(&self, now: f64) -> Vec<String> {
        let mut out = vec![format!(
            "[+] Building {now:.1}s ({}/{})",
            self.done, self.total_seen
        )];
        for (id, s) in &self.running {
            // The time stays visible however long the instruction is.
            let t = format!(" {:.1}s", (now - s.started).max(0.0));
            let room = self.width.saturating_sub(1 + t.len()).max(8);
            out.push(format!("{}{t}", cut(&s.header, room)));
            for l in &s.tail {
                out.push(format!("#{id}   {l}"));
            }
        }
        out
    }

    fn cut(&self, line: &str) -> String {
        cut(line, self.width - 1)
    }

    /// Back to the start of the live region, cleared, and the finished lines printed.
    fn rewind(&mut self) -> String {
        let mut s = String::new();
        if self.drawn > 0 {
            s.push_str(&format!("\x1b[{}A", self.drawn));
        }
        s.push_str("\r\x1b[J");
        for l in std::mem::take(&mut self.pending) {
            s.push_str(&self.cut(&l));
            s.push('\n');
        }
        s
    }

    /// The bytes that take the screen from the last frame to this one: back to the start of
    /// the live region, clear it, print the finished lines, draw the region again.
    pub fn paint(&mut self, now: f64) -> String {
        let mut s = self.rewind();
        let live = self.live(now);
        for l in &live {
            s.push_str(&self.cut(l));
            s.push('\n');
        }
        self.drawn = live.len();
        s
    }

    /// The last frame: the live region removed; steps still running (a failed build) are
    /// printed with their last output, then the plain summary line.
    pub fn end(&mut self, now: f64) -> String {
        let ids: Vec<usize> = self.running.keys().copied().collect();
        for id in ids {
            let s = &self.running[&id];
            let mut lines = vec![s.header.clone()];
            lines.extend(s.miss.clone());
            lines.extend(s.tail.iter().map(|l| format!("#{id} {l}")));
            lines.push(format!(
                "#{id} ERROR after {:.1}s",
                (now - s.started).max(0.0)
            ));
            self.running.remove(&id);
            self.pending.extend(lines);
        }
        let mut s = self.rewind();
        s.push_str(&format!(
            "[+] Building {now:.1}s ({}/{}) FINISHED\n",
            self.done, self.total_seen
        ));
        self.drawn = 0;
        s
    }
}

/// `line` in at most `width` characters; control characters from a step's output (which
/// could move the cursor) shown as `?`.
fn cut(line: &str, width: usize) -> String {
    line.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(width)
        .collect()
}

/// The live view on standard error, redrawn on every event and every 100 ms.
pub struct Tty {
    view: Mutex<View>,
    start: Instant,
    stop: AtomicBool,
}

impl Tty {
    pub fn new() -> Tty {
        Tty {
            view: Mutex::new(View::new(terminal_width())),
            start: Instant::now(),
            stop: AtomicBool::new(false),
        }
    }

    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn draw(&self) {
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = v.paint(self.now());
        let _ = std::io::stderr().lock().write_all(bytes.as_bytes());
    }

    /// Run `f` (the build) while a thread keeps the elapsed times moving; then end the view.
    pub fn around<R>(&self, f: impl FnOnce() -> R) -> R {
        let r = std::thread::scope(|s| {
            s.spawn(|| {
                while !self.stop.load(Ordering::Relaxed) {
                    self.draw();
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            let r = f();
            self.stop.store(true, Ordering::Relaxed);
            r
        });
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = v.end(self.now());
        let _ = std::io::stderr().lock().write_all(bytes.as_bytes());
        r
    }
}

impl Progress for Tty {
    fn event(&self, e: BuildEvent) {
        let now = self.now();
        // Output alone waits for the next tick: a chatty step does not redraw per line.
        let redraw = !matches!(e, BuildEvent::Output { .. });
        self.view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .apply(e, now);
        if redraw {
            self.draw();
        }
    }
}

/// Whether `auto` means the live view: standard error is a terminal that can draw it.
pub fn wanted() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

fn terminal_width() -> usize {
    window_size(libc::STDERR_FILENO).map_or(80, |(_, cols)| usize::from(cols))
}

/// The size of the terminal on `fd` as (rows, columns), or `None` when `fd` is not a
/// terminal or the terminal reports a zero size (a pty nobody has sized yet).
///
/// The one place the CLI asks a terminal its size: the build's live view, `run -t` and
/// `attach` all come here.
pub fn window_size(fd: std::os::fd::RawFd) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only writes a winsize struct through the valid pointer we pass; an
    // fd that is not a terminal makes it fail with ENOTTY.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: usize, text: &str) -> BuildEvent {
        BuildEvent::Step {
            id,
            stage: format!("stage-0 {id}/3"),
            text: text.into(),
        }
    }

    #[test]
    fn running_steps_show_elapsed_time_and_their_last_lines() {
        let mut v = View::new(80);
        v.apply(step(1, "FROM busybox"), 0.0);
        v.apply(
            BuildEvent::Done {
                id: 1,
                seconds: 0.01,
            },
            0.0,
        );
        v.apply(step(2, "RUN make"), 0.5);
        v.apply(
            BuildEvent::Miss {
                id: 2,
                reason: "no earlier build".into(),
            },
            0.5,
        );
        for i in 0..7 {
            v.apply(
                BuildEvent::Output {
                    id: 2,
                    text: format!("line {i}"),
                },
                0.6,
            );
        }
        let first = v.paint(2.0);
        assert_eq!(
            first,
            "\r\x1b[J#1 [stage-0 1/3] FROM busybox\n#1 DONE 0.0s\n\
             [+] Building 2.0s (1/2)\n#2 [stage-0 2/3] RUN make 1.5s\n\
             #2   line 2\n#2   line 3\n#2   line 4\n#2   line 5\n#2   line 6\n"
        );
        // The next frame goes back up over the 7 live lines only and redraws them.
        let second = v.paint(3.25);
        assert!(second.starts_with("\x1b[7A\r\x1b[J[+] Building 3.2s (1/2)\n"));
        assert!(second.contains("#2 [stage-0 2/3] RUN make 2.8s\n"));
        assert!(
            !second.contains("FROM busybox"),
            "finished lines print once"
        );
        v.apply(
            BuildEvent::Done {
                id: 2,
                seconds: 3.3,
            },
            3.3,
        );
        assert_eq!(
            v.end(3.4),
            "\x1b[7A\r\x1b[J#2 [stage-0 2/3] RUN make\n#2 cache miss: no earlier build\n\
             #2 DONE 3.3s\n[+] Building 3.4s (2/2) FINISHED\n"
        );
    }

    #[test]
    fn cached_steps_explain_and_warnings_go_above_the_live_region() {
        let mut v = View::new(80);
        v.apply(step(1, "COPY . /app"), 0.0);
        v.apply(
            BuildEvent::Explain {
                id: 1,
                lines: vec!["= parent sha256:1".into()],
            },
            0.0,
        );
        v.apply(BuildEvent::Cached { id: 1, from: None }, 0.0);
        v.apply(BuildEvent::Warning("unused arg X".into()), 0.0);
        assert_eq!(
            v.paint(0.1),
            "\r\x1b[J#1   = parent sha256:1\n#1 [stage-0 1/3] COPY . /app\n#1 CACHED\n\
             [Warning] unused arg X\n[+] Building 0.1s (1/1)\n"
        );
    }

    #[test]
    fn long_lines_are_cut_and_control_characters_hidden() {
        let mut v = View::new(20);
        v.apply(step(1, "RUN x"), 0.0);
        v.apply(
            BuildEvent::Output {
                id: 1,
                text: "\x1b[2Jwipe the screen and more".into(),
            },
            0.0,
        );
        let f = v.paint(0.0);
        assert!(f.contains("\n#1   ?[2Jwipe the s\n"), "{f:?}");
        assert!(f
            .lines()
            .all(|l| l.replace("\x1b[J", "").chars().count() < 20 + 2));
        let mut v = View::new(30);
        v.apply(step(1, "RUN a very long command that does not fit"), 0.0);
        assert_eq!(v.live(1.0)[1], "#1 [stage-0 1/3] RUN a v 1.0s");
    }

    #[test]
    fn a_failed_build_keeps_the_running_steps_output() {
        let mut v = View::new(80);
        v.apply(step(1, "RUN false"), 0.0);
        v.apply(
            BuildEvent::Output {
                id: 1,
                text: "boom".into(),
            },
            0.1,
        );
        v.paint(0.2);
        assert_eq!(
            v.end(0.5),
            "\x1b[3A\r\x1b[J#1 [stage-0 1/3] RUN false\n#1 boom\n#1 ERROR after 0.5s\n\
             [+] Building 0.5s (0/1) FINISHED\n"
        );
    }
}
